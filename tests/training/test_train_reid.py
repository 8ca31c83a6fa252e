import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iphd.data.reid import CROP_SIZE, finalize_split, write_crop
from iphd.reid.distill import make_student
from iphd.reid.extractor import load_embedder

REPO = Path(__file__).resolve().parents[2]
TRAINING = REPO / "training"
SMOKE = TRAINING / "configs" / "reid" / "smoke.yaml"
sys.path.insert(0, str(TRAINING))

import train_reid  # noqa: E402

IDENTITIES, SESSIONS, INSTANTS = 6, 2, 3


def make_tiny_reid(root: Path, seed: int = 0) -> Path:
    """A simulator-format re-ID train split: time-paired depth/RGB crops, 2 sessions per person."""
    rng = np.random.default_rng(seed)
    width, height = CROP_SIZE
    records = []
    for pid in range(IDENTITIES):
        distance_mm = 1500 + 400 * pid
        colour = rng.integers(30, 230, size=3)
        for session in range(SESSIONS):
            for t in range(INSTANTS):
                stamp_ns = 1_000_000_000 * t
                pair_id = (pid * SESSIONS + session) * INSTANTS + t
                depth = np.zeros((height, width), np.uint16)
                depth[20:240, 30:100] = distance_mm + rng.integers(-50, 50, size=(220, 70))
                rgb = np.zeros((height, width, 3), np.uint8)
                rgb[20:240, 30:100] = np.clip(colour + rng.integers(-20, 20, size=3), 0, 255)
                for modality, image, camid in (("depth", depth, 2 * session),
                                               ("rgb", rgb, 2 * session + 1)):
                    records.append(write_crop(
                        root, "train", image, pid=pid, camid=camid, modality=modality,
                        session=f"s{session:05d}", stamp_ns=stamp_ns, pair_id=pair_id,
                        name=f"s{session}_p{pid}_t{t}",
                    ))
    finalize_split(root, "train", records)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_reid(tmp_path_factory.mktemp("reid"))


@pytest.fixture(scope="module")
def depth_run(dataset, tmp_path_factory):
    """A step-I depth run shared by the step-II tests."""
    out = tmp_path_factory.mktemp("step1") / "depth"
    assert _run(dataset, out) == 0
    return out


def _run(dataset, out, *extra):
    args = ["--config", str(SMOKE), "--data", str(dataset), "--out", str(out), "--quiet", *extra]
    return train_reid.main(args)


def _distill(dataset, out, teacher, *extra):
    return _run(dataset, out, "--set", "step.kind=distill", "--set", f"step.teacher={teacher}",
                *extra)


@pytest.mark.parametrize("loss", ["triplet", "softmax"])
def test_step1_writes_checkpoints_log_and_curve(dataset, tmp_path, loss):
    out = tmp_path / "run"
    assert _run(dataset, out, "--set", f"step.loss={loss}") == 0
    for name in ("last.pt", "best.pt", "model.pt", "log.csv", "curve.png", "config.yaml",
                 "summary.json"):
        assert (out / name).is_file(), name
    model, normalize, extra = load_embedder(out / "model.pt")
    assert model.config.modality == "depth" and model.config.input_size == (32, 16)
    # Softmax has a classifier over the 4 training identities (2 of 6 held out to validate).
    assert model.config.num_classes == (4 if loss == "softmax" else 0)
    assert extra["training_config"]["step"]["loss"] == loss
    assert "optimizer" not in extra and "commit" in extra
    assert "optimizer" in torch.load(out / "last.pt", weights_only=True)["extra"]
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,iteration,lr,loss,val_map")
    assert any(r.split(",")[4] for r in rows[1:])  # a validation mAP


def test_step2_writes_the_depth_rgb_pair_and_keeps_frozen_blocks(dataset, depth_run, tmp_path):
    out = tmp_path / "distill"
    assert _distill(dataset, out, depth_run / "model.pt") == 0
    pair = json.loads((out / "pair.json").read_text())
    assert pair["direction"] == "depth->rgb"
    teacher, _, _ = load_embedder(out / pair["depth"])
    student, _, extra = load_embedder(out / pair["rgb"])
    assert teacher.config.modality == "depth" and student.config.modality == "rgb"
    assert extra["teacher"] == str(depth_run / "model.pt")
    original = load_embedder(depth_run / "model.pt")[0].state_dict()
    trained = student.state_dict()
    frozen = [k for k in trained if k.startswith(("backbone.layer3", "backbone.layer4", "fc.",
                                                  "bnneck."))]
    assert frozen and all(torch.equal(trained[k], original[k]) for k in frozen)
    assert not torch.equal(trained["backbone.conv1.weight"], original["backbone.conv1.weight"])
    rows = (out / "log.csv").read_text().splitlines()
    assert any(r.split(",")[6] and r.split(",")[7] for r in rows[1:])  # both directions scored


def test_step2_refuses_a_teacher_of_the_wrong_modality(dataset, depth_run, tmp_path, capsys):
    assert _distill(dataset, tmp_path / "run", depth_run / "model.pt",
                    "--set", "step.direction=rgb->depth") == 2
    err = capsys.readouterr().err
    assert "embeds depth crops" in err and "step.direction rgb->depth" in err


def test_step2_refuses_a_model_section_unlike_the_teacher(dataset, depth_run, tmp_path, capsys):
    assert _distill(dataset, tmp_path / "run", depth_run / "model.pt",
                    "--set", "model.embedding_dim=32") == 2
    assert "model.embedding_dim" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["one_stream", "zero_padding"])
def test_baselines_write_one_model_for_both_modalities(dataset, tmp_path, kind):
    out = tmp_path / kind
    assert _run(dataset, out, "--set", f"step.kind={kind}", "--set", "optim.epochs=1") == 0
    model, _, _ = load_embedder(out / "model.pt")
    assert model.config.modality == {"one_stream": "both", "zero_padding": "zero-padding"}[kind]
    assert json.loads((out / "summary.json").read_text())["best_val_map"] is not None


def test_resume_continues_after_the_saved_epoch(dataset, tmp_path):
    out = tmp_path / "run"
    assert _run(dataset, out, "--set", "optim.epochs=1") == 0
    first = torch.load(out / "last.pt", weights_only=True)["extra"]
    assert first["epoch"] == 0
    assert train_reid.main(["--resume", str(out / "last.pt"), "--quiet",
                            "--set", "optim.epochs=2"]) == 0
    second = torch.load(out / "last.pt", weights_only=True)["extra"]
    assert second["epoch"] == 1 and second["iteration"] == 2 * first["iteration"]


def test_early_stopping_after_patience_validations_without_progress(dataset, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.setattr(train_reid, "_validate", lambda *_: {"val_map": 0.5, "val_rank1": 0.5})
    out = tmp_path / "run"
    assert _run(dataset, out, "--set", "optim.epochs=5", "--set", "optim.patience=2") == 0
    assert torch.load(out / "last.pt", weights_only=True)["extra"]["epoch"] == 2
    assert torch.load(out / "best.pt", weights_only=True)["extra"]["epoch"] == 0
    assert "early stop" in capsys.readouterr().out


def test_init_checkpoint_starts_step1_from_trained_weights(dataset, depth_run, tmp_path, capsys):
    start = load_embedder(depth_run / "model.pt")[0].state_dict()["backbone.conv1.weight"]
    # A near-zero learning rate keeps the weights where they started: the trained ones with
    # init_checkpoint (softmax: a new classifier for this data's identities), fresh ones without.
    tiny = ("--set", "optim.epochs=1", "--set", "optim.lr=1e-12", "--set", "runtime.seed=5",
            "--set", "step.loss=softmax")
    tuned = tmp_path / "tuned"
    assert _run(dataset, tuned, *tiny, "--set",
                f"runtime.init_checkpoint={depth_run / 'model.pt'}") == 0
    model = load_embedder(tuned / "model.pt")[0]
    assert torch.allclose(model.state_dict()["backbone.conv1.weight"], start, atol=1e-6)
    assert model.config.num_classes == 4
    scratch = tmp_path / "scratch"
    assert _run(dataset, scratch, *tiny) == 0
    fresh = load_embedder(scratch / "model.pt")[0].state_dict()["backbone.conv1.weight"]
    assert not torch.allclose(fresh, start, atol=1e-3)
    # Another architecture or crop cut cannot take the weights: the error names the field.
    assert _run(dataset, tmp_path / "wide", "--set", "model.backbone_width=16", "--set",
                f"runtime.init_checkpoint={depth_run / 'model.pt'}") == 2
    assert "model.backbone_width: checkpoint 8, config 16" in capsys.readouterr().err
    assert _run(dataset, tmp_path / "cut", "--set", "normalize.depth_std=0.3", "--set",
                f"runtime.init_checkpoint={depth_run / 'model.pt'}") == 2
    assert "normalize.depth_std: checkpoint" in capsys.readouterr().err
    assert _run(dataset, tmp_path / "gone", "--set",
                f"runtime.init_checkpoint={tmp_path / 'missing.pt'}") == 2
    assert "missing.pt" in capsys.readouterr().err
    # Step II's student is the other modality: a depth model cannot start it.
    assert _distill(dataset, tmp_path / "distill", depth_run / "model.pt", "--set",
                    f"runtime.init_checkpoint={depth_run / 'model.pt'}") == 2
    assert "embeds depth, the student rgb" in capsys.readouterr().err
    assert _run(dataset, tmp_path / "one", "--set", "step.kind=one_stream", "--set",
                f"runtime.init_checkpoint={depth_run / 'model.pt'}") == 2
    assert "step.kind one_stream cannot take it" in capsys.readouterr().err


def test_step2_starts_its_student_from_a_trained_student(dataset, depth_run, tmp_path):
    # A new teacher (a fine-tuned depth model) and few pairs: the student's trainable blocks
    # start from a trained RGB student (the shipped one), its frozen blocks are the teacher's.
    from common import load_config

    first = tmp_path / "first"
    assert _distill(dataset, first, depth_run / "model.pt", "--set", "optim.epochs=1") == 0
    pair = json.loads((first / "pair.json").read_text())
    trained_rgb = first / pair["rgb"]
    raw = load_config(SMOKE)
    raw["data"]["root"] = str(dataset)
    raw["step"].update(kind="distill", teacher=str(depth_run / "model.pt"))
    raw["runtime"]["init_checkpoint"] = str(trained_rgb)
    run = train_reid.build_run_config(raw, "again")
    teacher = load_embedder(depth_run / "model.pt")[0]
    student = make_student(teacher, "rgb", run.step["freeze_from"])
    train_reid.init_from_checkpoint(student, run, trained_rgb)
    earlier, own, theirs = (m.state_dict() for m in (load_embedder(trained_rgb)[0], student,
                                                     teacher))
    lower = ("backbone.conv1.", "backbone.bn1.", "backbone.layer1.", "backbone.layer2.")
    assert not torch.equal(earlier["backbone.conv1.weight"], theirs["backbone.conv1.weight"])
    for key, value in own.items():
        assert torch.equal(value, (earlier if key.startswith(lower) else theirs)[key]), key
    assert _distill(dataset, tmp_path / "again", depth_run / "model.pt", "--set",
                    f"runtime.init_checkpoint={trained_rgb}", "--set", "optim.epochs=1") == 0


def test_the_finetune_config_fits_the_shipped_depth_embedder():
    # The documented fine-tuning command must be able to start from the shipped weights.
    from common import load_config
    from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER

    config = TRAINING / "configs" / "reid" / "cpu_sim_depth_finetune.yaml"
    raw = load_config(config)
    raw["data"]["root"] = "unused"
    run = train_reid.build_run_config(raw, config.stem)
    init = REPO / run.runtime["init_checkpoint"]  # relative to the repository, as data.root
    assert init.resolve() == Path(SHIPPED_DEPTH_EMBEDDER).resolve()
    model = train_reid.Embedder(train_reid.dataclasses.replace(run.model, num_classes=40))
    train_reid.init_from_checkpoint(model, run, init)
    shipped = load_embedder(SHIPPED_DEPTH_EMBEDDER)[0].state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("classifier."):
            assert torch.equal(value, shipped[name]), name


def test_the_distill_finetune_config_starts_from_the_shipped_rgb_student():
    # Its student takes the shipped RGB network's lower blocks; the teacher (here the shipped
    # depth embedder, standing in for a fine-tuned one) gives the rest.
    from common import load_config
    from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER

    config = TRAINING / "configs" / "reid" / "cpu_sim_distill_finetune.yaml"
    raw = load_config(config)
    raw["data"]["root"] = "unused"
    raw["step"]["teacher"] = str(SHIPPED_DEPTH_EMBEDDER)
    run = train_reid.build_run_config(raw, config.stem)
    init = REPO / run.runtime["init_checkpoint"]
    teacher = load_embedder(SHIPPED_DEPTH_EMBEDDER)[0]
    student = make_student(teacher, "rgb", run.step["freeze_from"])
    train_reid.init_from_checkpoint(student, run, init)
    shipped_rgb = load_embedder(init)[0]
    assert shipped_rgb.config.modality == "rgb"
    # The shipped pair was distilled this way, so the student is the shipped RGB network.
    ours, theirs = student.state_dict(), shipped_rgb.state_dict()
    assert all(torch.equal(value, theirs[name]) for name, value in ours.items())


def test_the_walks_configs_build_and_fit_one_another(tmp_path):
    # walks_depth.yaml trains what walks_distill.yaml distils: one architecture, metric crops.
    from common import load_config
    from iphd.tracking.appearance import SHIPPED_DEPTH_EMBEDDER

    depth = load_config(TRAINING / "configs" / "reid" / "walks_depth.yaml")
    depth["data"]["root"] = "unused"
    step1 = train_reid.build_run_config(depth, "walks_depth")
    assert step1.step["kind"] == "single" and step1.normalize.depth_crop == "metric"
    # The shipped depth model has the walks recipe's architecture: it stands in as the teacher.
    assert load_embedder(SHIPPED_DEPTH_EMBEDDER)[0].config.backbone_depth == \
        step1.model.backbone_depth
    distill = load_config(TRAINING / "configs" / "reid" / "walks_distill.yaml")
    distill["data"]["root"] = "unused"
    distill["step"]["teacher"] = str(SHIPPED_DEPTH_EMBEDDER)
    step2 = train_reid.build_run_config(distill, "walks_distill")
    assert step2.step["direction"] == "depth->rgb"
    assert step2.normalize == step1.normalize


def test_biwi_trains_on_a_list_of_its_subsets(tmp_path):
    # The paper's BIWI protocol trains on Training and validates on Still or Walking; a list
    # of subsets is what the source takes, and the config's type check lets it through.
    # (BiwiRgbdIdSource reading several subsets: tests/reid/test_reid_data.py.)
    from common import load_config
    from iphd.errors import ConfigError

    config = load_config(TRAINING / "configs" / "reid" / "smoke.yaml")
    config["data"].update(source="biwi", root=str(tmp_path / "biwi"),
                          train_split=["Training", "Still"], val_split="Walking")
    run = train_reid.build_run_config(config, "biwi")
    assert run.data["train_split"] == ["Training", "Still"]
    with pytest.raises(ConfigError, match=r"a subset or a list of subsets of Training, Still, "
                                          r"Walking, got \[\]"):
        train_reid.build_run_config({**config, "data": {**config["data"], "train_split": []}},
                                    "biwi")


def test_a_biwi_depth_step_that_cannot_validate_says_to_train_on_two_subsets():
    # One BIWI sequence is one person in one session: the generic advice (hold out
    # identities) failed the same way on one subset.
    from common import load_config
    from iphd.data.reid import ReidRecord
    from iphd.errors import DatasetError

    config = load_config(TRAINING / "configs" / "reid" / "cpu_sim_depth_finetune.yaml")
    config["data"].update(source="biwi", root="unused", train_split="Training")
    run = train_reid.build_run_config(config, "biwi")
    val = [ReidRecord(f"depth/{pid:05d}/{k}.png", pid, 0, "depth", f"Training_{pid:03d}", -1,
                      k) for pid in (3, 7) for k in range(2)]
    with pytest.raises(DatasetError, match=r'two BIWI subsets.*"data.train_split=\[Training, '
                                           r'Still\]"'):
        train_reid.check_validation(run, val)


def test_resume_from_a_final_model_is_refused(dataset, depth_run, capsys):
    assert train_reid.main(["--resume", str(depth_run / "model.pt")]) == 2
    assert "no training state" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "model.embeding_dim=8"], "unknown key(s) ['embeding_dim']"),
        (["--set", "step.kindd=single"], "unknown key(s) ['kindd']"),
        (["--set", "stepp.kind=single"], "unknown config section(s) ['stepp']"),
        (["--set", "step.kind=three_stream"], "step.kind"),
        (["--set", "optim.patience=two"], "patience must be a whole number"),
        (["--set", "step.modality=thermal"], "step.modality"),
        (["--set", "model.modality=rgb"], "model.modality"),
        (["--set", "step.kind=distill"], "step.teacher"),
        (["--set", "optim.patience=0"], "optim.patience"),
        (["--set", "data.val_identities=6"],
         "leaves none to train on: validate on a split of other people"),
        (["--set", "data.train_split=valid"], "unknown re-ID split"),
        # A list of splits is BIWI's (its subsets); the simulator's dataset opens one split.
        (["--set", "data.train_split=[train, test]"],
         "data.train_split with data.source sim must be one split name, e.g. train, got "
         "['train', 'test']"),
        (["--set", "data.train_split=null"], "data.train_split with data.source sim"),
        (["--set", "data.val_split=[test]"], "data.val_split with data.source sim"),
        (["--set", "augment.edge_cut=1.5"], "augment.edge_cut must be a probability"),
        (["--set", "augment.edge_cut=0.5"], "with normalize.depth_crop letterbox set it to 0"),
        (["--set", "normalize.depth_crop=metric"],
         "the data's depth crops are letterbox but the model is set up for metric crops"),
        # Said before training, not as a TypeError from the schedule or torch's DataLoader.
        (["--set", "optim.milestones=abc"],
         "'optim': milestones must be a list of epoch numbers (default [40]), got 'abc'"),
        (["--set", "runtime.workers=-1"], "runtime.workers must be >= 0, got -1"),
        (["--set", "runtime.val_every=0"], "runtime.val_every must be >= 1, got 0"),
        (["--set", "model.input_size=64"],
         "'model': input_size must be [height, width] (default [256, 128]), got 64"),
        (["--set", "normalize.rgb_mean=[0.5, 0.5]"], "rgb_mean must be a list of 3 numbers"),
    ],
)
def test_bad_configs_exit_2_naming_the_problem(dataset, tmp_path, capsys, extra, message):
    assert _run(dataset, tmp_path / "run", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("train_reid: error:") and message in err


def test_metric_crops_of_another_window_than_the_models_are_refused(dataset, tmp_path, capsys):
    # The tracker cuts with the checkpoint's normalize.depth_window_m: a model trained on the
    # data's 1.2 x 2.4 m crops under another window was run on crops of another size.
    import shutil

    import yaml

    data = shutil.copytree(dataset, tmp_path / "data")
    manifest = {"depth_crop": "metric", "depth_window_m": [1.2, 2.4]}
    (data / "simulator.yaml").write_text(yaml.safe_dump(manifest))
    metric = ("--set", "normalize.depth_crop=metric", "--set", "augment.edge_cut=0")
    assert _run(data, tmp_path / "run", *metric, "--set",
                "normalize.depth_window_m=[0.8, 1.6]") == 2
    err = capsys.readouterr().err
    assert "the data's metric depth crops are 1.2, 2.4 m windows but the model is set up " \
           "for 0.8, 1.6 m" in err and "normalize.depth_window_m: [1.2, 2.4]" in err
    # A window the manifest does not hold as two lengths is named.
    manifest["depth_window_m"] = "wide"
    (data / "simulator.yaml").write_text(yaml.safe_dump(manifest))
    assert _run(data, tmp_path / "run2", *metric) == 2
    assert "has depth_window_m 'wide'; expected [width, height] in metres" in \
        capsys.readouterr().err


def test_augmentation_keeps_invalid_depth_zero():
    depth = np.arange(1, 33, dtype=np.uint16).reshape(8, 4)
    depth[2, 1] = 0
    out = train_reid.augment_crop(depth, flip=True, dy=1, dx=-1)
    assert out.dtype == np.uint16 and out.shape == depth.shape
    assert out[3, 1] == 0  # the hole, mirrored to column 2 then moved left and down
    assert (out[0] == 0).all() and (out[:, -1] == 0).all()  # uncovered border is invalid
    assert set(np.unique(out)) - {0} <= set(np.unique(depth))


def _person_crop():
    """A 256x128 metric crop: a 40-column body at 2 m over a wall at 5 m and a floor band."""
    crop = np.full((256, 128), 5000, np.uint16)
    crop[200:256] = 2100  # floor around the feet, at the person's distance
    crop[20:250, 44:84] = 2000
    crop[:, :6] = 0  # outside the image already
    return crop


@pytest.mark.parametrize("side, hidden", [(-1, 0.25), (1, 0.5)])
def test_edge_cut_shows_the_person_as_the_tracker_cuts_them_at_an_image_edge(side, hidden):
    crop = _person_crop()
    out = train_reid.edge_cut_crop(crop, side, hidden)
    assert out.dtype == np.uint16 and out.shape == crop.shape
    body = np.flatnonzero((out[100] > 0) & (np.abs(out[100].astype(int) - 2000) <= 500))
    # The rest of the body, centred in the window (the tracker centres on the visible box).
    assert len(body) == pytest.approx(40 * (1 - hidden), abs=1)
    assert (body[0] + body[-1] + 1) / 2 == pytest.approx(64, abs=1)
    # Beyond the body on the hidden side is the outside of the image: invalid depth.
    beyond = out[100, :body[0]] if side < 0 else out[100, body[-1] + 1:]
    assert (beyond == 0).all()
    assert set(np.unique(out)) - {0} <= set(np.unique(crop))


def test_edge_cut_leaves_a_crop_without_a_body_alone():
    empty = np.zeros((256, 128), np.uint16)
    assert (train_reid.edge_cut_crop(empty, 1, 0.5) == 0).all()
    wall = np.full((256, 128), 5000, np.uint16)
    wall[:, 40:90] = 0  # the centre holds no valid depth
    assert np.array_equal(train_reid.edge_cut_crop(wall, -1, 0.5), wall)


def test_edge_cut_draws_are_repeatable_and_follow_the_probability():
    never = train_reid._Augmenter({"flip": True, "shift": 0.0, "edge_cut": 0.0}, seed=1)
    assert all(never.draw_edge_cut(i) is None for i in range(50))
    half = train_reid._Augmenter({"flip": True, "shift": 0.0, "edge_cut": 0.5}, seed=1)
    draws = [half.draw_edge_cut(i) for i in range(400)]
    assert 150 < sum(d is not None for d in draws) < 250
    lo, hi = train_reid.EDGE_CUT_FRACTION
    assert all(lo <= d[1] <= hi and d[0] in (-1, 1) for d in draws if d is not None)
    assert draws == [half.draw_edge_cut(i) for i in range(400)]


def test_eval_writes_table_rows_for_a_pair_and_a_one_stream_model(dataset, depth_run, tmp_path):
    import eval_reid

    distill = tmp_path / "distill"
    one = tmp_path / "one"
    assert _distill(dataset, distill, depth_run / "model.pt", "--set", "optim.epochs=1") == 0
    assert _run(dataset, one, "--set", "step.kind=one_stream", "--set", "optim.epochs=1") == 0
    table = tmp_path / "table.md"
    pair = json.loads((distill / "pair.json").read_text())
    by_files = f"{distill / pair['depth']},{distill / pair['rgb']}"
    assert eval_reid.main(["--data", str(dataset), "--split", "train", "--trials", "2",
                           "--run", f"depth→RGB distillation={distill}",
                           "--run", f"one-stream={one / 'model.pt'}",
                           "--run", f"by files={by_files}", "--out", str(table),
                           "--device", "cpu"]) == 0
    text = table.read_text()
    assert text.startswith("| setting | query → gallery |")
    for name in ("depth→RGB distillation", "one-stream", "by files"):
        assert f"| {name} | depth → RGB |" in text and f"| {name} | RGB → depth |" in text
    # DEPTH,RGB is the folder's pair: the same rows.
    rows = {line.split(" | ", 1)[1] for line in text.splitlines() if line.startswith(
        ("| depth→RGB distillation", "| by files"))}
    assert len(rows) == 2
    # Two depth models are no pair.
    depth = distill / pair["depth"]
    assert eval_reid.main(["--data", str(dataset), "--split", "train", "--run",
                           f"x={depth},{depth}", "--device", "cpu"]) == 2


def test_eval_scores_a_single_modality_model_across_sessions(dataset, depth_run, tmp_path):
    import eval_reid

    table = tmp_path / "t.md"
    assert eval_reid.main(["--data", str(dataset), "--split", "train", "--trials", "2",
                           "--run", f"step I={depth_run / 'model.pt'}", "--out", str(table),
                           "--device", "cpu"]) == 0
    rows = table.read_text().splitlines()[2:]
    # One row, as step I validates: every depth crop queries those of the other sessions.
    assert len(rows) == 1 and rows[0].startswith("| step I | depth → depth, other sessions |")
    model, normalize, _ = load_embedder(depth_run / "model.pt")
    source = train_reid.open_source({**train_reid.DATA_DEFAULTS, "source": "sim",
                                     "root": str(dataset)}, "train")
    expected = train_reid.evaluate_single(model, normalize, source, source.records, "depth",
                                          "cpu", 2)
    assert f"{100 * expected.mAP:.1f}" in rows[0]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["single", "distill"])
def test_torchrun_two_cpu_processes_train_one_model(dataset, depth_run, tmp_path, kind):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TRAINING / "train_reid.py"), "--config", str(SMOKE), "--data", str(dataset),
           "--out", str(out), "--quiet", "--set", f"step.kind={kind}",
           "--set", f"step.teacher={depth_run / 'model.pt'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / ("model.pt" if kind == "single" else "pair.json")).is_file()
    extra = torch.load(out / "last.pt", weights_only=True)["extra"]
    # single: 4 training identities, P = 2 per process, 2 processes: 1 iteration per epoch.
    # distill: 24 pairs, 4 per batch, 2 processes: 3 iterations per epoch. Two epochs each.
    assert extra["iteration"] == (2 if kind == "single" else 6)
    assert "2 process(es)" in done.stdout


TINY = ["model.backbone_width=8", "model.embedding_dim=16", "model.input_size=[32, 16]",
        "data.val_identities=2", "data.trials=2", "step.p=2", "step.k=2", "optim.epochs=1",
        "optim.batch_size=4", "optim.patience=null", "runtime.workers=0", "runtime.threads=1",
        "normalize.depth_crop=letterbox"]  # make_tiny_reid's crops are cut to the box


def _compare(dataset, out, *extra):
    import compare_reid

    args = ["--data", str(dataset), "--out", str(out), "--split", "train", "--trials", "2",
            "--quiet", *extra]
    for item in TINY:
        args += ["--set", item]
    return compare_reid.main(args)


def test_compare_trains_every_run_and_states_the_findings(dataset, tmp_path, capsys):
    out = tmp_path / "compare"
    assert _compare(dataset, out) == 0
    text = (out / "comparison.md").read_text()
    for row in ("depth → RGB distillation", "RGB → depth distillation", "one-stream baseline",
                "zero-padding baseline"):
        assert f"| {row} | depth → RGB |" in text and f"| {row} | RGB → depth |" in text
    # two claims (vs RGB → depth, vs one-stream) for each of the two query/gallery assignments
    assert text.count("reproduced") == 4
    result = json.loads((out / "comparison.json").read_text())
    assert set(result["map"]) == {"depth_to_rgb", "rgb_to_depth", "one_stream", "zero_padding"}
    assert all(0.0 <= v <= 1.0 for m in result["map"].values() for v in m.values())
    # the step-II runs were taught by the step-I runs of this comparison
    pair = json.loads((out / "rgb_to_depth" / "pair.json").read_text())
    assert pair["direction"] == "rgb->depth" and pair["teacher"] == str(out / "rgb" / "model.pt")

    stamp = (out / "depth" / "model.pt").stat().st_mtime_ns
    assert _compare(dataset, out, "--skip-trained") == 0
    assert (out / "depth" / "model.pt").stat().st_mtime_ns == stamp


def test_compare_stops_with_exit_2_when_a_run_fails(dataset, tmp_path, capsys):
    assert _compare(dataset, tmp_path / "c", "--set", "optim.lr=-1") == 2
    assert "training depth failed" in capsys.readouterr().err


def test_validation_crops_that_cannot_be_scored_are_refused_before_training(tmp_path, capsys):
    # bag_to_reid.py over one bag: each person in one session only.
    root = make_tiny_reid(tmp_path / "data")
    width, height = CROP_SIZE
    crop = np.full((height, width), 2000, np.uint16)
    records = [write_crop(root, "test", crop, pid=pid, camid=0, modality="depth",
                          session="s00000", stamp_ns=t, pair_id=pid * 10 + t, name=f"p{pid}_{t}")
               for pid in range(2) for t in range(2)]
    finalize_split(root, "test", records)
    out = tmp_path / "run"
    assert _run(root, out, "--set", "data.val_split=test") == 2
    err = capsys.readouterr().err
    assert "no person seen in two sessions" in err and "data.val_split" in err
    assert not (out / "last.pt").exists()  # refused before any training


def test_eval_names_what_is_wrong_with_a_run_or_a_missing_split(tmp_path, capsys):
    import eval_reid

    shipped = Path(__file__).resolve().parents[2] / "src" / "iphd" / "models" / "reid_depth.pt"
    (tmp_path / "step2").mkdir()
    (tmp_path / "step2" / "pair.json").write_text('{"depth": "model_depth.pt"}')
    (tmp_path / "empty").mkdir()
    for run, expected in (
        (tmp_path / "step2", 'pair.json does not name both checkpoints: a step-II folder\'s '
                             'pair.json holds {"depth": FILE, "rgb": FILE}'),
        (tmp_path / "empty", "is a folder with neither pair.json (a step-II run) nor model.pt"),
    ):
        assert eval_reid.main(["--data", str(tmp_path), "--run", f"x={run}"]) == 2
        assert expected in capsys.readouterr().err
    # BIWI and open-reid have no split called test: the layout's own names are asked for.
    for source, expected in (("biwi", "--source biwi needs --split: Still or Walking"),
                             ("openreid", "--source openreid needs --split: a subset of")):
        assert eval_reid.main(["--data", str(tmp_path), "--source", source,
                               "--run", f"x={shipped}"]) == 2
        assert expected in capsys.readouterr().err


def test_eval_refuses_bad_trials_runs_and_out_before_scoring(tmp_path, capsys):
    import eval_reid

    shipped = Path(__file__).resolve().parents[2] / "src" / "iphd" / "models" / "reid_depth.pt"
    base = ["--data", str(tmp_path), "--device", "cpu"]
    for extra, expected in (
        (["--run", f"x={shipped}", "--trials", "0"],
         "--trials must be >= 1 (single-shot gallery draws), got 0"),
        (["--run", f"x={shipped},{shipped},{shipped}"],
         "PATH is one checkpoint or run folder, or two checkpoints DEPTH,RGB scored as a pair"),
        (["--run", f"x={shipped},"], "two checkpoints DEPTH,RGB"),
        (["--run", f"x={shipped}", "--out", str(tmp_path)],
         f"--out {tmp_path} is a folder: give the file to write"),
    ):
        assert eval_reid.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("eval_reid: error:") and expected in err


def test_compare_checks_its_arguments_and_reused_runs_before_training(
    dataset, tmp_path, monkeypatch, capsys
):
    import compare_reid

    trained = []
    monkeypatch.setattr(compare_reid.subprocess, "run",
                        lambda cmd, **kw: trained.append(cmd) or subprocess.CompletedProcess(
                            cmd, 1))
    out = tmp_path / "c"
    (out / "rgb_to_depth").mkdir(parents=True)
    (out / "rgb_to_depth" / "summary.json").write_text("{not json")
    (tmp_path / "afile").write_text("x")
    for extra, expected in (
        (["--skip-trained"], f"{out / 'rgb_to_depth' / 'summary.json'} is unreadable ("),
        (["--skip-trained"], "delete it to train rgb_to_depth again, or leave out --skip-trained"),
        (["--split", "nosuch"], "unknown re-ID split 'nosuch'"),
        (["--trials", "0"], "--trials must be >= 1"),
        (["--out", str(tmp_path / "afile")], "is a file, not a folder"),
    ):
        assert _compare(dataset, out, *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("compare_reid: error:") and expected in err
    assert trained == []
    # A summary.json whose minutes are no number is named the same way.
    (out / "rgb_to_depth" / "summary.json").write_text('{"minutes": "soon"}')
    assert _compare(dataset, out, "--skip-trained") == 2
    assert "summary.json is unreadable" in capsys.readouterr().err and trained == []
