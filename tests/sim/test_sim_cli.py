"""``iphd-sim``: summaries, clear errors on bad input, and nothing half-written left behind."""

import os

import pytest

import iphd.data.iphd as iphd_io
from iphd.data.rosbag import RigBagWriter
from iphd.sim.cli import run


def _left(folder):
    """Everything in ``folder`` (staging folders included: they start with a dot)."""
    return sorted(p.name for p in folder.iterdir())


def test_iphd_command_prints_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "ds"
    assert run(["iphd", "--out", str(out), "--frames", "3", "--frames-per-sequence", "1",
                "--workers", "1", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out
    assert "'train': 1, 'valid': 1, 'test': 1" in captured.out
    assert "% zero" in captured.out and "invalid" in captured.out
    assert "took" in captured.err
    assert _left(tmp_path) == ["ds"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["iphd", "--frames", "-3"], "--frames must be >= 1, got -3"),
        (["iphd", "--frames", "0"], "--frames must be >= 1, got 0"),
        (["iphd", "--frames", "1", "--weak-offset", "nan"], "--weak-offset must be at least 0"),
        (["iphd", "--frames", "1", "--weak-scale", "inf"], "--weak-scale must be at least 0"),
        (["iphd", "--frames", "1", "--weak-spurious", "1e9"], "--weak-spurious must be at least"),
        (["reid-walks", "--rate", "1000"], "--rate must be above 0 and at most 30"),
        (["bag", "--duration", "inf"], "--duration must be above 0 and at most 3600"),
        (["bag", "--duration", "1", "--pan-period", "0"], "--pan-period must be above 0"),
        (["rsrec", "--duration", "1", "--workers", "-3"], "--workers must be >= 1"),
        (["sheet", "--workers", "0"], "--workers must be >= 1"),
        (["iphd", "--frames", "4", "--workers", "0"], "--workers must be >= 1, got 0"),
        (["iphd", "--frames", "4", "--frames-per-sequence", "0"], "--frames-per-sequence"),
        (["iphd", "--frames", "4", "--stride", "-1"], "--stride"),
        (["iphd", "--frames", "4", "--weak-miss", "1.5"], "--weak-miss must be at least 0"),
        (["reid", "--identities", "1"], "--identities must be >= 2"),
        (["reid", "--crops", "-1"], "--crops"),
        (["reid", "--workers", "0"], "--workers"),
        (["bag", "--duration", "-1"], "--duration must be above 0"),
        (["bag", "--duration", "1", "--workers", "0"], "--workers"),
        (["bag", "--duration", "1", "--people", "16"], "at most 15 people"),
        (["rsrec", "--duration", "0"], "--duration"),
        (["sheet", "--rows", "0"], "--rows must be >= 1"),
        (["iphd", "--frames", "4", "--seed", "-1"], "--seed"),
    ],
)
def test_bad_arguments_are_a_clear_error_and_write_nothing(tmp_path, capsys, argv, message):
    suffix = {"rsrec": "out.db3", "sheet": "out.png"}.get(argv[0], "out")
    out = tmp_path / suffix
    assert run([*argv, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"iphd-sim {argv[0]}: error:" in err
    assert message in err
    assert _left(tmp_path) == []


def test_negative_people_count_is_refused(tmp_path, capsys):
    # -1 is the documented "draw it like the datasets" default; any other negative is a typo.
    assert run(["bag", "--out", str(tmp_path / "bag"), "--duration", "0.2", "--people", "-5",
                "--quiet"]) == 2
    assert "--people" in capsys.readouterr().err
    assert _left(tmp_path) == []


def test_a_bag_too_short_for_a_thermal_frame_says_so(tmp_path, capsys):
    assert run(["bag", "--out", str(tmp_path / "bag"), "--duration", "0.3", "--people", "0",
                "--profile", "aligned_424x240", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "'depth/image_raw': 9" in captured.out and "thermal/image_raw" not in captured.out
    assert "has no thermal frame, so no pair" in captured.err
    assert "give --duration 2 or more" in captured.err


def test_unwritable_folder_is_a_clear_error(tmp_path, capsys, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda path, mode, **kw: False if path == tmp_path
                        else real_access(path, mode, **kw))
    assert run(["iphd", "--out", str(tmp_path / "ds"), "--frames", "2", "--quiet"]) == 2
    assert "not writable" in capsys.readouterr().err
    assert _left(tmp_path) == []


def test_output_below_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "ds"
    assert run(["iphd", "--out", str(out), "--frames", "2", "--quiet"]) == 2
    assert "cannot create the parent folder" in capsys.readouterr().err
    assert _left(tmp_path) == ["file"]


@pytest.mark.parametrize("command, name", [("rsrec", "rec.db3"), ("sheet", "sheet.png")])
def test_a_file_output_in_the_way_is_refused_before_rendering(tmp_path, capsys, command, name):
    (tmp_path / "file").write_text("x")
    assert run([command, "--out", str(tmp_path / "file" / name), "--quiet"]) == 2
    assert "cannot create the parent folder" in capsys.readouterr().err
    (tmp_path / name).mkdir()  # a folder where the file goes, even with --overwrite
    assert run([command, "--out", str(tmp_path / name), "--overwrite", "--quiet"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["file", name])


@pytest.mark.parametrize("command", ["iphd", "reid", "bag"])
def test_existing_output_is_kept_without_overwrite(tmp_path, capsys, command):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    extra = ["--duration", "0.2"] if command == "bag" else []
    assert run([command, "--out", str(out), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert "already exists and is not empty" in err and "--overwrite" in err
    assert _left(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert _left(tmp_path) == ["out"]


def test_overwrite_replaces_an_existing_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    assert run(["iphd", "--out", str(out), "--frames", "1", "--frames-per-sequence", "1",
                "--workers", "1", "--overwrite", "--quiet"]) == 0
    assert "keep.txt" not in _left(out)
    assert "iphd_train_depth" in _left(out)
    assert _left(tmp_path) == ["out"]


def _fail_after(monkeypatch, module, name, calls, exc):
    real = getattr(module, name)
    count = {"n": 0}

    def flaky(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return count


@pytest.mark.parametrize("workers", ["1", "2"])
def test_failure_midway_leaves_nothing_that_looks_complete(tmp_path, monkeypatch, workers):
    if workers == "1":
        count = _fail_after(monkeypatch, iphd_io, "write_frame", 2, RuntimeError("disk on fire"))
    else:
        # Spawned workers do not see this process's monkeypatches: fail in the parent once the
        # workers have written every frame into the staging folder.
        count = _fail_after(monkeypatch, iphd_io, "finalize_split", 0, RuntimeError("disk on fire"))
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(["iphd", "--out", str(tmp_path / "ds"), "--frames", "8", "--frames-per-sequence", "4",
             "--workers", workers, "--quiet"])
    if workers == "1":
        assert count["n"] == 3
    assert _left(tmp_path) == []  # neither the output nor its staging folder


def test_interrupt_leaves_nothing_and_says_so(tmp_path, monkeypatch, capsys):
    _fail_after(monkeypatch, iphd_io, "write_frame", 1, KeyboardInterrupt())
    assert run(["iphd", "--out", str(tmp_path / "ds"), "--frames", "4", "--workers", "1",
                "--quiet"]) == 130
    assert "interrupted; nothing was left" in capsys.readouterr().err
    assert _left(tmp_path) == []


def test_bag_failure_midway_leaves_no_bag(tmp_path, monkeypatch):
    _fail_after(monkeypatch, RigBagWriter, "write_thermal", 2, RuntimeError("bag full"))
    with pytest.raises(RuntimeError, match="bag full"):
        run(["bag", "--out", str(tmp_path / "bag"), "--duration", "2.5", "--profile",
             "aligned_640x360", "--workers", "1", "--quiet"])
    assert _left(tmp_path) == []
