"""Shared simulated calibration capture and its solve, made once per test session."""

import pytest

from iphd.calib.simulate import perturbed_calibration, simulate_capture
from iphd.calib.solve import calibrate
from iphd.calibration import load_calibration

# A rig off the nominal file: t = (20, 40, -10) mm, ~1.9 deg rotation, fx/fy +5 %, principal
# point shifted, a 40 ms clock offset where the nominal file says 0.
TRUE_OFFSET_S = 0.04


@pytest.fixture(scope="session")
def nominal():
    return load_calibration()


@pytest.fixture(scope="session")
def truth(nominal):
    return perturbed_calibration(nominal, clock_offset_s=TRUE_OFFSET_S)


@pytest.fixture(scope="session")
def capture(truth):
    """10 poses at 640x360 (~20 s of recording)."""
    return simulate_capture(truth, poses=10, seed=0, depth_profile="aligned_640x360")


@pytest.fixture(scope="session")
def solved(capture, nominal):
    return calibrate(capture.recording, nominal, source="test")
