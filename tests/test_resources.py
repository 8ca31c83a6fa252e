"""The package's data files are found in the source tree and in every install layout."""

from pathlib import Path

import pytest

from iphd import resources
from iphd.calibration import DEFAULT_CALIBRATION, load_calibration
from iphd.errors import CalibrationError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_ament_index(monkeypatch):
    """Nothing installed in the ament index: only the paths relative to the package count."""
    monkeypatch.setenv("AMENT_PREFIX_PATH", "")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x: 1\n")
    return path


def test_source_tree_files_are_found():
    assert resources.package_file("calibration/rig.yaml") == ROOT / "calibration" / "rig.yaml"
    assert resources.package_file("launch/iphd_params.yaml") == ROOT / "launch" / "iphd_params.yaml"
    assert DEFAULT_CALIBRATION == ROOT / "calibration" / "rig.yaml"


@pytest.mark.parametrize(
    "site",
    [
        "install/iphd_bringup/lib/python3.12/site-packages",  # colcon, isolated
        "install/lib/python3.12/site-packages",  # colcon --merge-install
        "usr/lib/python3/dist-packages",  # a Debian package
        "home/me/.local/lib/python3.12/site-packages",  # pip --user
    ],
)
def test_installed_files_are_found_in_the_prefix_share_folder(tmp_path, no_ament_index, site):
    package_dir = tmp_path / site / "iphd"
    package_dir.mkdir(parents=True)
    prefix = package_dir.parents[3]
    rig = _touch(prefix / "share" / "iphd_bringup" / "calibration" / "rig.yaml")
    assert resources.find_package_file("calibration/rig.yaml", package_dir) == rig
    assert resources.package_file("calibration/rig.yaml", package_dir) == rig


def test_the_source_tree_comes_before_an_install(tmp_path, no_ament_index):
    package_dir = tmp_path / "src" / "iphd"
    package_dir.mkdir(parents=True)
    mine = _touch(tmp_path / "launch" / "iphd_params.yaml")
    assert resources.package_file("launch/iphd_params.yaml", package_dir) == mine


def test_the_ament_index_is_looked_at_last(tmp_path, monkeypatch):
    prefix = tmp_path / "overlay"
    _touch(prefix / "share" / "ament_index" / "resource_index" / "packages" / "iphd_bringup")
    rig = _touch(prefix / "share" / "iphd_bringup" / "calibration" / "rig.yaml")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    package_dir = tmp_path / "elsewhere" / "iphd"  # neither a source tree nor a prefix
    package_dir.mkdir(parents=True)
    assert resources.package_file("calibration/rig.yaml", package_dir) == rig


def test_a_missing_file_names_every_place_looked_at(tmp_path, no_ament_index):
    package_dir = tmp_path / "install" / "lib" / "python3.12" / "site-packages" / "iphd"
    package_dir.mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        resources.package_file("calibration/rig.yaml", package_dir)
    message = str(err.value)
    share = tmp_path / "install" / "share" / "iphd_bringup"
    assert str(share / "calibration" / "rig.yaml") in message
    assert "colcon build" in message


def test_a_missing_default_calibration_says_it_is_not_installed(monkeypatch, tmp_path):
    import iphd.calibration as calibration

    missing = tmp_path / "share" / "iphd_bringup" / "calibration" / "rig.yaml"
    monkeypatch.setattr(calibration, "DEFAULT_CALIBRATION", missing)
    with pytest.raises(CalibrationError, match="nominal calibration .* is not installed"):
        calibration.load_calibration(missing)
    with pytest.raises(CalibrationError, match="does not exist; pass the rig.yaml"):
        load_calibration(tmp_path / "mine.yaml")
