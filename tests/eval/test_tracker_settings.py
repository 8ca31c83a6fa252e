"""``--set name=value``: tracker settings typed as TrackerConfig, bad ones named."""

import pytest

from iphd.errors import ConfigError
from iphd.eval.tracker_settings import parse_settings, tracker_config
from iphd.tracking.tracker import TrackerConfig


def test_settings_are_typed_as_the_tracker_config():
    assert parse_settings(["reid_max_distance=0.8,1.3", "confirm_hits=2", "up_axis=z",
                           "adopt_lost=False"]) == {
        "reid_max_distance": [0.8, 1.3], "confirm_hits": [2], "up_axis": ["z"],
        "adopt_lost": [False],
    }
    assert parse_settings([]) == {}


def test_one_value_per_setting_overrides_the_defaults_or_a_base():
    config = tracker_config(["lost_timeout_s=4", "confirm_hits=2", "adopt_lost=false"])
    assert (config.lost_timeout_s, config.confirm_hits, config.adopt_lost) == (4.0, 2, False)
    assert config.min_iou == TrackerConfig().min_iou
    assert tracker_config([]) == TrackerConfig()
    base = TrackerConfig(up_axis="z")
    assert tracker_config(["min_iou=0.1"], base) == TrackerConfig(up_axis="z", min_iou=0.1)


@pytest.mark.parametrize(("item", "message"), [
    ("lost_timeout=4", "'lost_timeout' is not a tracker setting; the settings are .*min_iou"),
    ("lost_timeout_s", "name=value"),
    ("confirm_hits=2.5", "confirm_hits: '2.5' is not a int"),
    ("adopt_lost=yes", "adopt_lost: 'yes' is not a bool"),
    ("lost_timeout_s=4,8", "one value per setting here; training/tune_tracker.py tries several"),
    ("min_iou=2", "--set: min_iou"),
])
def test_a_bad_setting_is_named(item, message):
    with pytest.raises(ConfigError, match=message):
        tracker_config([item])
