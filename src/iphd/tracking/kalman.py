"""Constant-velocity Kalman filter on the ground plane (state: two positions, two velocities)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from iphd.errors import ConfigError

_I2 = np.eye(2)
_H = np.hstack([_I2, np.zeros((2, 2))])  # measurement = position


class ConstantVelocityKalman:
    """Kalman filter with state ``[p1, p2, v1, v2]`` (metres, metres per second).

    The process noise is white acceleration: each ground axis receives an independent random
    acceleration of standard deviation ``process_accel_std_mps2`` that is constant over one
    prediction step. Measurements are positions with isotropic noise ``measurement_std_m``.

    A new filter starts at the measured position with zero velocity and a velocity standard
    deviation of ``initial_velocity_std_mps`` (large: the first detections set the velocity).
    """

    def __init__(
        self,
        position_m: Sequence[float] | np.ndarray,
        *,
        process_accel_std_mps2: float = 1.0,
        measurement_std_m: float = 0.15,
        initial_velocity_std_mps: float = 2.5,
    ) -> None:
        """Start a filter at ``position_m`` with zero velocity.

        Args:
            position_m: (2,) measured ground-plane position, metres.
            process_accel_std_mps2: white-noise acceleration standard deviation, m/s².
            measurement_std_m: position measurement standard deviation, metres.
            initial_velocity_std_mps: velocity standard deviation of the new filter, m/s.

        Raises:
            ConfigError: a standard deviation is not a positive finite number.
            ValueError: ``position_m`` is not two finite numbers.
        """
        _check_std("initial_velocity_std_mps", initial_velocity_std_mps)
        self.set_noise(
            process_accel_std_mps2=process_accel_std_mps2, measurement_std_m=measurement_std_m
        )
        z = _as_position(position_m)
        self._x = np.array([z[0], z[1], 0.0, 0.0])
        self._p = np.diag(
            [self._r[0, 0], self._r[1, 1], initial_velocity_std_mps**2, initial_velocity_std_mps**2]
        )

    def set_noise(self, *, process_accel_std_mps2: float, measurement_std_m: float) -> None:
        """Use new noise levels from the next predict / update on (the state is kept).

        Raises:
            ConfigError: a standard deviation is not a positive finite number.
        """
        _check_std("process_accel_std_mps2", process_accel_std_mps2)
        _check_std("measurement_std_m", measurement_std_m)
        self._accel_var = float(process_accel_std_mps2) ** 2
        self._r = float(measurement_std_m) ** 2 * _I2

    @property
    def position(self) -> np.ndarray:
        """(2,) estimated ground-plane position, metres (a copy)."""
        return self._x[:2].copy()

    @property
    def velocity(self) -> np.ndarray:
        """(2,) estimated ground-plane velocity, m/s (a copy)."""
        return self._x[2:].copy()

    @property
    def state(self) -> np.ndarray:
        """(4,) state ``[p1, p2, v1, v2]`` (a copy)."""
        return self._x.copy()

    @property
    def covariance(self) -> np.ndarray:
        """(4, 4) state covariance (a copy)."""
        return self._p.copy()

    def predict(self, dt_s: float) -> None:
        """Advance the state by ``dt_s`` seconds at constant velocity.

        Raises:
            ValueError: ``dt_s`` is negative or not finite.
        """
        if not (math.isfinite(dt_s) and dt_s >= 0.0):
            raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s}")
        f = np.eye(4)
        f[0, 2] = f[1, 3] = dt_s
        q_pp = dt_s**4 / 4.0
        q_pv = dt_s**3 / 2.0
        q_vv = dt_s**2
        q = self._accel_var * np.block([[q_pp * _I2, q_pv * _I2], [q_pv * _I2, q_vv * _I2]])
        self._x = f @ self._x
        self._p = f @ self._p @ f.T + q

    def innovation(self, z_m: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residual ``z - H x`` (2,) and its covariance ``S`` (2, 2) for a position measurement."""
        z = _as_position(z_m)
        return z - self._x[:2], self._p[:2, :2] + self._r

    def mahalanobis(self, z_m: Sequence[float] | np.ndarray) -> float:
        """Mahalanobis distance (not squared) of a position measurement from the prediction."""
        y, s = self.innovation(z_m)
        return float(math.sqrt(max(float(y @ np.linalg.solve(s, y)), 0.0)))

    def update(self, z_m: Sequence[float] | np.ndarray) -> None:
        """Correct the state with a measured ground-plane position ``z_m`` (2,), metres.

        Raises:
            ValueError: ``z_m`` is not two finite numbers.
        """
        y, s = self.innovation(z_m)
        k = np.linalg.solve(s, _H @ self._p).T  # P H^T S^-1, S and P symmetric
        self._x = self._x + k @ y
        # Joseph form: stays symmetric positive definite under rounding.
        a = np.eye(4) - k @ _H
        self._p = a @ self._p @ a.T + k @ self._r @ k.T


def _as_position(value: Sequence[float] | np.ndarray) -> np.ndarray:
    z = np.asarray(value, dtype=np.float64).reshape(-1)
    if z.shape != (2,) or not np.all(np.isfinite(z)):
        raise ValueError(f"a ground-plane position must be two finite numbers, got {value!r}")
    return z


def _check_std(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ConfigError(f"{name} must be a positive finite number, got {value}")
