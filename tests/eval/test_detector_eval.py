"""evaluate_detector, write_report and ``iphd-eval detector`` on tiny IPHD splits in tmp_path."""

import json
import math
import sys
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from iphd.data.iphd import IphdDataset, finalize_split, frame_meta, frame_name, write_frame
from iphd.errors import ConfigError
from iphd.eval.cli import main
from iphd.eval.detector_eval import evaluate_detector, write_report
from iphd.eval.iphd_ap import read_submission

W, H = 96, 64  # depth frame, px
TW, TH = 16, 11  # thermal frame, px
ANY_SIZE = {"depth_size": None, "thermal_size": None}
BOX = np.array([10.0, 10.0, 30.0, 30.0])  # 20 x 20 px person in every frame


def _write_split(root, boxes_per_frame, split="test"):
    """One frame per entry of ``boxes_per_frame``; depth[0, 0] = frame index + 1 (the key)."""
    rng = np.random.default_rng(0)
    names = []
    for index, boxes in enumerate(boxes_per_frame):
        name = frame_name(1, index)
        depth = rng.integers(500, 6000, (H, W)).astype(np.uint16)
        depth[0, 0] = index + 1
        thermal = rng.integers(29000, 31000, (TH, TW)).astype(np.uint16)
        write_frame(root, split, name, depth, thermal, np.array(boxes), np.array(boxes))
        names.append(name)
    metas = [frame_meta(n, 1, i, i * 1000, []) for i, n in enumerate(names)]
    finalize_split(root, split, names, metas)
    return names


@dataclass(frozen=True)
class _Found:
    boxes_xyxy: np.ndarray
    scores: np.ndarray


class _Fake:
    """Returns preset (K, 5) rows for the frame whose depth[0, 0] is index + 1."""

    def __init__(self, rows_per_frame):
        self.rows = [np.asarray(r, dtype=np.float32).reshape(-1, 5) for r in rows_per_frame]
        self.calls = 0

    def __call__(self, depth_mm, thermal_ck):
        self.calls += 1
        rows = self.rows[int(depth_mm[0, 0]) - 1]
        return _Found(rows[:, :4], rows[:, 4])


@pytest.fixture
def three_frames(tmp_path):
    _write_split(tmp_path, [[BOX]] * 3)
    return IphdDataset(tmp_path, "test", **ANY_SIZE)


def test_ground_truth_as_predictions_gives_ap_one(three_frames):
    fake = _Fake([np.append(s.boxes_xyxy[0], 0.9) for s in three_frames])
    result = evaluate_detector(fake, three_frames, progress=False)
    assert result.ap == {0.25: pytest.approx(1.0), 0.5: pytest.approx(1.0), 0.75: 1.0}
    assert (result.n_frames, result.n_gt, result.n_pred) == (3, 3, 3)
    assert result.latency_ms.shape == (3,) and np.all(result.latency_ms >= 0)
    assert result.latency_median_ms <= result.latency_p95_ms
    assert fake.calls == 4  # one untimed warm-up call on the first frame
    assert result.sizes == {n: (W, H) for n in three_frames.names}


def test_no_predictions_gives_ap_zero(three_frames):
    result = evaluate_detector(_Fake([[]] * 3), three_frames, progress=False)
    assert all(ap == 0.0 for ap in result.ap.values())
    assert (result.n_gt, result.n_pred) == (3, 0)
    assert all(rows.shape == (0, 5) for rows in result.predictions.values())


def test_shifted_predictions_give_hand_computed_ap(three_frames):
    # 20 px boxes shifted right by 0, 5 and 10 px: IoU 1, 15/25 = 0.6 and 10/30 = 0.33.
    # @0.25: TP TP TP -> 1. @0.5: TP TP FP -> precision 1, 1, 2/3 at recall 1/3, 2/3, 2/3 -> 2/3.
    # @0.75: TP FP FP -> 1/3.
    fake = _Fake([[*(BOX + [dx, 0, dx, 0]), score]
                  for dx, score in ((0, 0.9), (5, 0.8), (10, 0.7))])
    result = evaluate_detector(fake, three_frames, progress=False)
    assert result.ap[0.25] == pytest.approx(1.0, abs=1e-6)
    assert result.ap[0.5] == pytest.approx(2 / 3, abs=1e-6)
    assert result.ap[0.75] == pytest.approx(1 / 3, abs=1e-6)
    np.testing.assert_allclose(result.precision[0.5], [1.0, 1.0, 2 / 3])
    np.testing.assert_allclose(result.recall[0.75], [1 / 3, 1 / 3, 1 / 3])


def test_limit_evaluates_only_the_first_frames(three_frames):
    result = evaluate_detector(_Fake([[]] * 3), three_frames, progress=False, limit=2)
    assert result.n_frames == 2 and result.n_gt == 2
    assert sorted(result.ground_truth) == list(three_frames.names[:2])
    with pytest.raises(ConfigError, match="limit"):
        evaluate_detector(_Fake([]), three_frames, progress=False, limit=0)


def test_mismatched_detector_output_names_the_frame(three_frames):
    class Broken:
        def __call__(self, depth_mm, thermal_ck):
            return _Found(np.zeros((2, 4)), np.zeros(1))

    with pytest.raises(ValueError, match=three_frames.names[0]):
        evaluate_detector(Broken(), three_frames, progress=False)


def test_report_files_agree_with_the_result(tmp_path, three_frames):
    fake = _Fake([[*(BOX + [dx, 0, dx, 0]), 0.5] for dx in (0, 5, 10)])
    result = evaluate_detector(fake, three_frames, progress=False)
    meta = {"checkpoint": "ckpt.pt", "dataset": "data/x", "split": "test", "labels": "weak",
            "config": {"detector_config": {"backbone_depth": 18}}}
    files = write_report(result, tmp_path / "report", meta)
    metrics = json.loads(files.metrics_json.read_text())
    assert metrics["ap"] == {f"{t:.2f}": pytest.approx(result.ap[t]) for t in result.thresholds}
    assert (metrics["n_frames"], metrics["n_gt"], metrics["n_pred"]) == (3, 3, 3)
    assert metrics["latency_ms"]["median"] == pytest.approx(result.latency_median_ms)
    assert metrics["meta"]["checkpoint"] == "ckpt.pt" and metrics["meta"]["date"]
    submission = read_submission(files.predictions_pkl)
    assert sorted(submission) == list(three_frames.names)
    np.testing.assert_allclose(submission[three_frames.names[0]],
                               [[20 / W, 20 / H, 20 / W, 20 / H, 0.5]], atol=1e-6)
    assert cv2.imread(str(files.pr_png)) is not None
    report = files.report_md.read_text()
    assert f"| AP@0.50 | {result.ap[0.5]:.4f} |" in report
    assert "ckpt.pt" in report and '"backbone_depth": 18' in report


def test_split_without_ground_truth_reports_undefined_ap(tmp_path):
    _write_split(tmp_path / "data", [[], []])
    dataset = IphdDataset(tmp_path / "data", "test", **ANY_SIZE)
    result = evaluate_detector(_Fake([[*BOX, 0.9], []]), dataset, progress=False)
    assert all(math.isnan(ap) for ap in result.ap.values()) and result.n_pred == 1
    files = write_report(result, tmp_path / "report", {})
    assert json.loads(files.metrics_json.read_text())["ap"]["0.50"] is None
    assert "| AP@0.50 | n/a |" in files.report_md.read_text()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from iphd.detection.detector import save_checkpoint
    from iphd.detection.model import DetectorConfig, FusionDetector
    from iphd.normalize import NormalizeConfig

    torch.manual_seed(0)
    config = DetectorConfig(backbone_depth=18, backbone_width=8, head_channels=8,
                            input_size=(32, 48), score_threshold=0.0, max_detections=5)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, FusionDetector(config), NormalizeConfig(out_size=(48, 32)),
                           {"epoch": 2, "optimizer": {"lr": [0.1]}})


def _cli(checkpoint, dataset, out, *extra):
    return main(["detector", "--checkpoint", str(checkpoint), "--dataset", str(dataset),
                 "--out", str(out), "--device", "cpu", "--any-size", "--quiet", *extra])


def test_cli_writes_report_and_prints_summary(tmp_path, checkpoint, capsys):
    _write_split(tmp_path / "data", [[BOX], [BOX, BOX + 40]])
    out = tmp_path / "eval"
    assert _cli(checkpoint, tmp_path / "data", out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json", "pr.png", "predictions.pkl", "report.md"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_frames"] == 2 and metrics["n_gt"] == 3
    assert metrics["meta"]["config"]["detector_config"]["backbone_width"] == 8
    assert metrics["meta"]["config"]["training"] == {"epoch": 2}
    printed = capsys.readouterr().out
    assert "AP@0.25" in printed and str(out / "report.md") in printed


def test_cli_scores_the_checkpoint_on_the_backend_the_node_runs(
    tmp_path, checkpoint, capsys, monkeypatch
):
    monkeypatch.setenv("IPHD_CACHE_DIR", str(tmp_path / "cache"))
    _write_split(tmp_path / "data", [[BOX], [BOX, BOX + 40]])
    metrics = {}
    for backend in ("torch", "onnxruntime", "onnxruntime-int8"):
        out = tmp_path / backend
        assert _cli(checkpoint, tmp_path / "data", out, "--backend", backend) == 0
        metrics[backend] = json.loads((out / "metrics.json").read_text())
        assert metrics[backend]["meta"]["backend"] == backend
        assert metrics[backend]["meta"]["config"]["detector_config"]["backbone_width"] == 8
    assert metrics["torch"]["meta"]["config"]["format"] == "torch"
    assert metrics["onnxruntime"]["meta"]["config"]["precision"] == "float32"
    assert metrics["onnxruntime-int8"]["meta"]["config"]["precision"] == "int8"
    # The float32 export scores what torch scores.
    for t in ("0.25", "0.50", "0.75"):
        assert metrics["onnxruntime"]["ap"][t] == pytest.approx(metrics["torch"]["ap"][t], abs=1e-3)
    assert main(["detector", "--checkpoint", str(checkpoint), "--dataset", str(tmp_path / "data"),
                 "--backend", "onnxruntime-int8", "--device", "cuda", "--quiet"]) == 2
    assert "runs on the CPU" in capsys.readouterr().err


def test_cli_missing_checkpoint_exits_2_naming_it(tmp_path, capsys):
    _write_split(tmp_path / "data", [[BOX]])
    missing = tmp_path / "nope.pt"
    assert _cli(missing, tmp_path / "data", tmp_path / "eval") == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    assert not (tmp_path / "eval").exists()


def test_cli_missing_thermal_partner_exits_2_naming_the_frame(tmp_path, checkpoint, capsys):
    names = _write_split(tmp_path / "data", [[BOX], [BOX]])
    (tmp_path / "data" / "iphd_test_thermal" / "images" / f"{names[1]}.png").unlink()
    assert _cli(checkpoint, tmp_path / "data", tmp_path / "eval") == 2
    err = capsys.readouterr().err
    assert names[1] in err and "thermal partner" in err


def test_cli_malformed_label_exits_2_naming_file_and_line(tmp_path, checkpoint, capsys):
    names = _write_split(tmp_path / "data", [[BOX], [BOX]])
    label = tmp_path / "data" / "iphd_test_depth" / "labels" / f"{names[1]}.txt"
    label.write_text("0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1\n")
    assert _cli(checkpoint, tmp_path / "data", tmp_path / "eval") == 2
    err = capsys.readouterr().err
    assert f"{label} line 2" in err and "Traceback" not in err


def test_cli_onnx_without_onnx_module_exits_2(tmp_path, monkeypatch, capsys):
    _write_split(tmp_path / "data", [[BOX]])
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    monkeypatch.setitem(sys.modules, "iphd.detection.onnx_export", None)  # import fails
    assert _cli(model, tmp_path / "data", tmp_path / "eval") == 2
    assert "onnx_export" in capsys.readouterr().err


def test_cli_small_frames_without_any_size_point_to_the_flag(tmp_path, checkpoint, capsys):
    _write_split(tmp_path / "data", [[BOX]])
    assert main(["detector", "--checkpoint", str(checkpoint), "--dataset",
                 str(tmp_path / "data"), "--out", str(tmp_path / "eval"), "--quiet"]) == 2
    assert "--any-size" in capsys.readouterr().err


def test_cli_empty_split_exits_2_saying_there_is_nothing_to_score(tmp_path, checkpoint, capsys):
    _write_split(tmp_path / "data", [])
    assert _cli(checkpoint, tmp_path / "data", tmp_path / "eval") == 2
    err = capsys.readouterr().err
    assert "holds no frames" in err and "--split" in err
    assert not (tmp_path / "eval").exists()
