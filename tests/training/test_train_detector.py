import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_iphd import make_tiny_iphd

from iphd.detection.detector import Detector, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TRAINING = REPO / "training"
SMOKE = TRAINING / "configs" / "detector" / "smoke.yaml"
sys.path.insert(0, str(TRAINING))

import train_detector  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_tiny_iphd(tmp_path_factory.mktemp("iphd"))


def _run(dataset, out, *extra):
    args = ["--config", str(SMOKE), "--data", str(dataset), "--out", str(out), "--quiet",
            "--set", "data.any_size=true", *extra]
    return train_detector.main(args)


def test_smoke_run_writes_checkpoints_log_and_curve(dataset, tmp_path):
    out = tmp_path / "run"
    assert _run(dataset, out) == 0
    for name in ("last.pt", "best.pt", "model.pt", "log.csv", "curve.png", "config.yaml",
                 "summary.json"):
        assert (out / name).is_file(), name
    model, normalize, extra = load_checkpoint(out / "model.pt")
    assert model.config.backbone_width == 8 and normalize.out_size == (128, 64)
    assert extra["training_config"]["data"]["root"] == str(dataset)
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,iteration,lr,loss")
    assert any(r.split(",")[11] for r in rows[1:])  # a val_ap50 value
    detector = Detector.from_checkpoint(out / "model.pt", device="cpu")
    assert detector.model.config.fusion == "early"


def test_resume_continues_after_the_saved_epoch(dataset, tmp_path):
    out = tmp_path / "run"
    assert _run(dataset, out, "--set", "optim.epochs=1") == 0
    first = torch.load(out / "last.pt", weights_only=True)["extra"]
    assert first["epoch"] == 0
    # Copied back from another machine: the run goes on where its last.pt now is.
    moved = out.rename(tmp_path / "moved")
    assert train_detector.main(["--resume", str(moved / "last.pt"), "--quiet",
                                "--set", "optim.epochs=2"]) == 0
    assert not out.exists()
    second = torch.load(moved / "last.pt", weights_only=True)["extra"]
    assert second["epoch"] == 1
    assert second["iteration"] == 2 * first["iteration"]


def test_a_new_run_refuses_a_folder_holding_an_earlier_run_unless_told_to_overwrite(
    dataset, tmp_path, capsys
):
    # A second run without validation wrote the first run's best.pt as its model.pt and
    # continued the first run's log.csv.
    out = tmp_path / "run"
    assert _run(dataset, out, "--set", "optim.epochs=1") == 0
    assert (out / "best.pt").is_file()
    unvalidated = ("--set", "optim.epochs=1", "--set", "data.val_split=null")
    assert _run(dataset, out, *unvalidated) == 2
    err = capsys.readouterr().err
    assert "holds an earlier run (last.pt, best.pt, model.pt" in err
    assert f"--resume {out / 'last.pt'}" in err and "--overwrite" in err
    assert _run(dataset, out, *unvalidated, "--overwrite") == 0
    assert not (out / "best.pt").exists()
    model = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    last = torch.load(out / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(model[k], last[k]) for k in model)
    # This run's rows only: its iterations once each.
    iterations = [int(r.split(",")[1]) for r in (out / "log.csv").read_text().splitlines()[1:]]
    assert iterations == sorted(set(iterations))


def test_a_bad_label_line_found_by_a_loader_worker_is_one_line_naming_the_file(
    tmp_path, capsys
):
    data = make_tiny_iphd(tmp_path / "iphd", {"train": 4, "valid": 2})
    label = sorted((data / "iphd_train_depth" / "labels").glob("*.txt"))[0]
    label.write_text(label.read_text() + "0 0.5 0.5\n")
    assert _run(data, tmp_path / "run", "--set", "runtime.workers=1") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"train_detector: error: {label} line ")
    assert "Traceback" not in err and "DataLoader worker" not in err


def test_an_empty_split_is_refused_by_name_before_training(tmp_path, capsys):
    data = make_tiny_iphd(tmp_path / "iphd", {"train": 4, "valid": 0})
    assert _run(data, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert f"train_detector: error: the valid split of {data} has no frames" in err
    assert "data.val_split; null for none" in err and not (tmp_path / "run" / "last.pt").exists()


def test_a_validation_split_that_labels_nobody_is_refused_before_training(tmp_path, capsys):
    # Its AP is NaN every epoch: no epoch was best, and best.pt was never written.
    data = make_tiny_iphd(tmp_path / "iphd", {"train": 4, "valid": 2})
    labels = data / "iphd_valid_depth" / "labels"
    for label in labels.glob("*.txt"):
        label.write_text("")
    assert _run(data, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert f"train_detector: error: the valid split of {data} labels no person in the 2 " in err
    assert "data.val_split; null for none" in err and not (tmp_path / "run" / "last.pt").exists()
    # One labelled person is enough.
    (labels / sorted(p.name for p in labels.glob("*.txt"))[1]).write_text("0 0.5 0.5 0.2 0.6\n")
    assert _run(data, tmp_path / "run", "--set", "optim.epochs=1") == 0


def test_an_out_that_cannot_be_a_folder_is_refused_before_training(dataset, tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"x")
    assert _run(dataset, tmp_path / "model.pt") == 2
    err = capsys.readouterr().err
    assert f"train_detector: error: --out (runtime.out) {tmp_path / 'model.pt'} is a file" in err


def test_resuming_a_run_that_reached_its_iteration_cap_says_how_to_go_on(
    dataset, tmp_path, capsys
):
    out = tmp_path / "run"
    assert _run(dataset, out, "--set", "optim.epochs=1", "--set", "optim.max_iters=1") == 0
    resume = ["--resume", str(out / "last.pt"), "--quiet", "--set", "optim.epochs=2"]
    assert train_detector.main(resume) == 2
    assert "--set optim.max_iters=null" in capsys.readouterr().err
    assert train_detector.main([*resume, "--set", "optim.max_iters=null"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["extra"]["epoch"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "model.backbone_dept=18"], "unknown key"),
        (["--set", "optim.lr=-1"], "optim.lr"),
        (["--set", "data.labels=noisy"], "data.labels"),
        (["--set", "oops"], "section.key=value"),
        # A typo in a switch is text, which Python takes for true: refused, not the opposite.
        (["--set", "model.use_rem=flase"], "'model': use_rem must be true or false"),
        (["--set", "data.any_size=yes_please"], "any_size must be true or false"),
        (["--set", "optim.epochs=1.5"], "epochs must be a whole number"),
        (["--set", "data.train_splits=[nothere]"], "unknown IPHD split"),
        # Validated at 64x128 (the batches' aspect) while it detects at 64x64: refused.
        (["--set", "model.input_size=[64,64]"], "set model.input_size to [64, 128]"),
        # Said before training, not as a TypeError from the schedule or torch's DataLoader.
        (["--set", "optim.milestones=abc"],
         "'optim': milestones must be a list of epoch numbers (default [7, 9]), got 'abc'"),
        (["--set", "optim.milestones=[1, x]"], "milestones must be a list of epoch numbers"),
        (["--set", "runtime.workers=-1"], "runtime.workers must be >= 0, got -1"),
        (["--set", "runtime.threads=0"], "runtime.threads must be >= 1, or null, got 0"),
        (["--set", "runtime.log_every=0"], "runtime.log_every must be >= 1, got 0"),
        (["--set", "optim.max_iters=many"],
         "optim.max_iters must be a whole number >= 1, or null, got 'many'"),
        (["--set", "model.input_size=64"],
         "'model': input_size must be [height, width] (default [256, 448]), got 64"),
        (["--set", "model.input_size=[64]"], "input_size must be [height, width]"),
        (["--set", "data.short_sides=64"], "short_sides must be a list of short sides in pixels"),
    ],
)
def test_bad_configs_exit_2_naming_the_problem(dataset, tmp_path, capsys, extra, message):
    assert _run(dataset, tmp_path / "run", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("train_detector: error:") and message in err
    assert not (tmp_path / "run" / "log.csv").exists()  # refused before training


def test_frames_of_another_size_are_refused_before_training_with_the_setting(
    dataset, tmp_path, capsys
):
    # The tiny dataset's frames are not IPHD's 1280x720, as bag_to_iphd.py's are not.
    assert _run(
        dataset, tmp_path / "run", "--set", "data.any_size=false", "--set", "runtime.workers=1"
    ) == 2
    err = capsys.readouterr().err
    assert "expected 1280x720" in err and "--set data.any_size=true" in err
    assert "Traceback" not in err and "worker" not in err


def test_resume_from_a_shipped_model_is_refused(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(dataset, out, "--set", "optim.epochs=1") == 0
    assert train_detector.main(["--resume", str(out / "model.pt")]) == 2
    assert "no training state" in capsys.readouterr().err


def _first_conv(path):
    model, _, _ = load_checkpoint(path)
    return next(p for n, p in model.named_parameters() if p.ndim == 4).detach().clone()


def test_init_checkpoint_starts_from_trained_weights(dataset, tmp_path, capsys):
    trained = tmp_path / "trained"
    assert _run(dataset, trained, "--set", "optim.epochs=1") == 0
    start = _first_conv(trained / "model.pt")
    # A near-zero learning rate keeps the weights where they started: the trained ones with
    # init_checkpoint, fresh random ones without.
    tiny = ("--set", "optim.epochs=1", "--set", "optim.lr=1e-12", "--set", "runtime.seed=5")
    tuned = tmp_path / "tuned"
    assert _run(dataset, tuned, *tiny, "--set",
                f"runtime.init_checkpoint={trained / 'model.pt'}") == 0
    assert torch.allclose(_first_conv(tuned / "model.pt"), start, atol=1e-6)
    scratch = tmp_path / "scratch"
    assert _run(dataset, scratch, *tiny) == 0
    assert not torch.allclose(_first_conv(scratch / "model.pt"), start, atol=1e-3)
    # Another architecture cannot take the weights: the error names the field.
    assert _run(dataset, tmp_path / "wide", "--set", "model.backbone_width=16", "--set",
                f"runtime.init_checkpoint={trained / 'model.pt'}") == 2
    assert "model.backbone_width: checkpoint 8, config 16" in capsys.readouterr().err
    assert _run(dataset, tmp_path / "gone", "--set",
                f"runtime.init_checkpoint={tmp_path / 'missing.pt'}") == 2
    assert "missing.pt" in capsys.readouterr().err


def test_the_finetune_config_fits_the_shipped_model():
    # The documented fine-tuning command must be able to start from the shipped weights.
    from common import load_config
    from iphd.detection.detector import SHIPPED_CHECKPOINT

    config = TRAINING / "configs" / "detector" / "cpu_sim_finetune.yaml"
    run = train_detector.build_run_config(load_config(config), config.stem)
    init = REPO / run.runtime["init_checkpoint"]  # relative to the repository, as data.root
    assert init.resolve() == Path(SHIPPED_CHECKPOINT).resolve()
    model = train_detector.FusionDetector(run.model)
    train_detector.init_from_checkpoint(model, run, init)
    shipped, _, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    for (name, a), b in zip(model.state_dict().items(), shipped.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_non_finite_loss_stops_with_advice(dataset, tmp_path, capsys):
    assert _run(dataset, tmp_path / "run", "--set", "optim.lr=1e30",
                "--set", "optim.warmup_iters=0") == 2
    assert "lower optim.lr" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_model(dataset, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TRAINING / "train_detector.py"), "--config", str(SMOKE), "--data", str(dataset),
           "--out", str(out), "--quiet", "--set", "data.any_size=true"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model.pt").is_file()
    extra = torch.load(out / "last.pt", weights_only=True)["extra"]
    # 8 frames, batch 2 per process, 2 processes: 2 iterations per epoch, 2 epochs.
    assert extra["iteration"] == 4
    assert "2 process(es)" in done.stdout


@pytest.mark.slow
def test_ablation_runner_trains_each_variant_and_writes_the_table(dataset, tmp_path):
    import ablate_detector

    out = tmp_path / "ablation"
    rc = ablate_detector.main(["--config", str(SMOKE), "--variants", "thermal,late", "--out",
                               str(out), "--quiet", "--set", f"data.root={dataset}",
                               "--set", "data.any_size=true", "--set", "optim.epochs=1"])
    assert rc == 0
    table = (out / "ablation.md").read_text()
    assert "| thermal only (T, T, T) | I |" in table
    assert "| late fusion (two detectors, NMS merge) | I |" in table
    assert load_checkpoint(out / "late" / "model.pt")[0].config.fusion == "late"


def test_ablation_runner_rejects_unknown_variants(capsys):
    import ablate_detector

    assert ablate_detector.main(["--variants", "early,colour"]) == 2
    assert "colour" in capsys.readouterr().err


def test_ablation_runner_checks_the_scored_split_and_out_before_training(
    tmp_path, monkeypatch, capsys
):
    import ablate_detector

    data = make_tiny_iphd(tmp_path / "data", frames={"train": 2, "valid": 1})  # no test split
    trained = []
    monkeypatch.setattr(ablate_detector.subprocess, "run",
                        lambda cmd, **kw: trained.append(cmd) or subprocess.CompletedProcess(
                            cmd, 1))
    base = ["--config", str(SMOKE), "--variants", "depth", "--set", f"data.root={data}",
            "--set", "data.any_size=true", "--quiet"]
    assert ablate_detector.main([*base, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablate_detector: error: --eval-split test with --eval-labels clean "
                          "cannot be scored: IPHD folder")
    assert "iphd_test_depth" in err
    (tmp_path / "afile").write_text("x")
    assert ablate_detector.main([*base, "--eval-split", "valid", "--out",
                                 str(tmp_path / "afile")]) == 2
    assert f"--out {tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    assert trained == []


def test_a_fine_tuning_config_finds_the_shipped_model_from_another_folder(tmp_path, monkeypatch):
    # cpu_sim_finetune.yaml names src/iphd/models/detector.pt, a path in the repository.
    from common import repo_file

    monkeypatch.chdir(tmp_path)
    assert repo_file("src/iphd/models/detector.pt") == REPO / "src/iphd/models/detector.pt"
    # Files of the working folder, absolute paths and missing files stay as they are.
    (tmp_path / "mine.pt").write_bytes(b"x")
    assert repo_file("mine.pt") == Path("mine.pt")
    assert repo_file("nowhere.pt") == Path("nowhere.pt")
    assert repo_file(str(tmp_path / "mine.pt")) == tmp_path / "mine.pt"
