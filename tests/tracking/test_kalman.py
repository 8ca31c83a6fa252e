import numpy as np
import pytest

from iphd.errors import ConfigError
from iphd.tracking.kalman import ConstantVelocityKalman


def test_new_filter_starts_at_measurement_with_zero_velocity_and_large_velocity_variance():
    kf = ConstantVelocityKalman([1.0, 2.0], measurement_std_m=0.1, initial_velocity_std_mps=2.0)
    np.testing.assert_allclose(kf.position, [1.0, 2.0])
    np.testing.assert_allclose(kf.velocity, [0.0, 0.0])
    np.testing.assert_allclose(np.diag(kf.covariance), [0.01, 0.01, 4.0, 4.0])


def test_converges_on_constant_velocity_target():
    rng = np.random.default_rng(0)
    velocity = np.array([1.2, -0.6])
    start = np.array([-2.0, 3.0])
    dt_s = 0.1
    kf = ConstantVelocityKalman(
        start + rng.normal(0.0, 0.05, 2), process_accel_std_mps2=0.3, measurement_std_m=0.05
    )
    for k in range(1, 80):
        kf.predict(dt_s)
        kf.update(start + velocity * k * dt_s + rng.normal(0.0, 0.05, 2))
    truth = start + velocity * 79 * dt_s
    np.testing.assert_allclose(kf.velocity, velocity, atol=0.15)
    np.testing.assert_allclose(kf.position, truth, atol=0.08)
    # The filter believes itself: its velocity standard deviation is small too.
    assert np.all(np.sqrt(np.diag(kf.covariance)[2:]) < 0.3)


def test_predict_moves_at_constant_velocity_and_adds_white_acceleration_noise():
    kf = ConstantVelocityKalman([0.0, 0.0], process_accel_std_mps2=2.0, measurement_std_m=0.1)
    kf.predict(1.0)
    kf.update([1.0, 0.5])
    p0 = kf.covariance
    x0 = kf.state
    assert np.all(np.abs(x0[2:]) > 0.1)
    dt = 0.5
    kf.predict(dt)
    f = np.eye(4)
    f[0, 2] = f[1, 3] = dt
    q1 = 4.0 * np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]])
    q = np.zeros((4, 4))
    q[np.ix_([0, 2], [0, 2])] = q1
    q[np.ix_([1, 3], [1, 3])] = q1
    np.testing.assert_allclose(kf.covariance, f @ p0 @ f.T + q, rtol=1e-12)
    np.testing.assert_allclose(kf.state, f @ x0)


def test_update_pulls_towards_measurement_and_shrinks_position_variance():
    kf = ConstantVelocityKalman([0.0, 0.0], measurement_std_m=0.2)
    kf.predict(1.0)
    before = np.diag(kf.covariance)[:2].copy()
    kf.update([1.0, 0.0])
    assert 0.0 < kf.position[0] < 1.0
    assert kf.velocity[0] > 0.0
    assert np.all(np.diag(kf.covariance)[:2] < before)
    np.testing.assert_allclose(kf.covariance, kf.covariance.T)


def test_mahalanobis_grows_with_distance():
    kf = ConstantVelocityKalman([0.0, 0.0], measurement_std_m=0.1)
    near = kf.mahalanobis([0.1, 0.0])
    far = kf.mahalanobis([1.0, 0.0])
    assert far > near > 0.0
    # S = 2 * 0.1² I on a fresh filter: the distance of 0.1 m is 0.1 / sqrt(0.02).
    assert near == pytest.approx(0.1 / np.sqrt(0.02))


@pytest.mark.parametrize("dt_s", [-0.1, float("nan"), float("inf")])
def test_predict_rejects_negative_or_non_finite_dt(dt_s):
    kf = ConstantVelocityKalman([0.0, 0.0])
    with pytest.raises(ValueError, match="dt_s"):
        kf.predict(dt_s)


def test_update_rejects_non_finite_measurement():
    kf = ConstantVelocityKalman([0.0, 0.0])
    with pytest.raises(ValueError, match="two finite numbers"):
        kf.update([float("nan"), 0.0])


@pytest.mark.parametrize("kwargs", [{"measurement_std_m": 0.0}, {"process_accel_std_mps2": -1.0}])
def test_rejects_non_positive_noise(kwargs):
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        ConstantVelocityKalman([0.0, 0.0], **kwargs)
