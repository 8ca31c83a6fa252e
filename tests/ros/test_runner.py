import cv2
import pytest

from iphd.errors import ConfigError
from iphd.ros.runner import main, run_graph


@pytest.mark.slow
def test_sim_graph_pairs_and_registers_in_one_process(tmp_path):
    result = run_graph(
        "sim",
        4.0,
        snapshot=tmp_path / "fusion.png",
        overrides={"sim_source": {"width": 424, "height": 240}},
    )
    stats = result.stats
    assert stats["depth_frames"] > 60 and stats["thermal_frames"] > 15
    assert stats["published"] >= stats["pairs"] - 1 > 10
    assert stats["thermal_drop_fraction"] < 0.1
    assert not any(k.startswith("errors_") for k in stats), stats
    image = cv2.imread(str(result.snapshot))
    assert image is not None and image.shape[0] == 240


def test_runner_refuses_an_unknown_source_with_the_choices(capsys):
    assert main(["--source", "camera", "--duration", "1"]) == 2
    assert "choose one of live, sim" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        run_graph("camera", 1.0)
