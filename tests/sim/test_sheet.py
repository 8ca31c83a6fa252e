import cv2
import numpy as np
import pytest

from iphd.errors import ConfigError, DatasetError
from iphd.sim.sheet import write_contact_sheet

LEGEND, TILE = 22, 180
COLUMNS = (320, 240, 320, 320)  # depth 16:9 | Lepton 4:3 | registered 16:9 | RGB 16:9


@pytest.fixture(scope="module")
def sheet(tmp_path_factory, calibration):
    path = tmp_path_factory.mktemp("sheet") / "sheet.png"
    assert write_contact_sheet(path, seed=0, calibration=calibration, rows=2) == path
    return path


def test_contact_sheet_is_a_png_of_four_columns_per_scene(sheet):
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(sheet), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint8
    assert image.shape == (LEGEND + 2 * TILE, sum(COLUMNS), 3)
    edges = np.cumsum((0, *COLUMNS))
    for row in range(2):
        band = image[LEGEND + row * TILE : LEGEND + (row + 1) * TILE]
        for left, right in zip(edges[:-1], edges[1:], strict=True):
            tile = band[30:, left:right].astype(np.float64)  # below the caption
            assert tile.std() > 5, (row, left)
        # The RGB tile is its own picture, not a copy of the depth tile.
        assert not np.array_equal(band[:, edges[0]:edges[1]], band[:, edges[3]:edges[4]])
    # Boxes: the clean (green) label colour appears on the depth tile of a scene with people.
    green = np.all(image == (80, 255, 80), axis=2)
    assert green[:, : edges[1]].sum() > 50


def test_contact_sheet_is_repeatable(sheet, tmp_path, calibration):
    again = write_contact_sheet(tmp_path / "again.png", seed=0, calibration=calibration, rows=2)
    assert again.read_bytes() == sheet.read_bytes()


def test_contact_sheet_refuses_bad_paths_and_keeps_existing_files(tmp_path, calibration):
    with pytest.raises(ValueError, match=".png"):
        write_contact_sheet(tmp_path / "sheet.jpg", seed=0, calibration=calibration, rows=1)
    with pytest.raises(ConfigError, match="--rows"):
        write_contact_sheet(tmp_path / "sheet.png", seed=0, calibration=calibration, rows=0)
    existing = tmp_path / "old.png"
    existing.write_bytes(b"keep")
    with pytest.raises(DatasetError, match="--overwrite"):
        write_contact_sheet(existing, seed=0, calibration=calibration, rows=1)
    assert existing.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]
