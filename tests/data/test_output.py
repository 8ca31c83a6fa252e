import os

import numpy as np
import pytest

from iphd.data.output import StagedOutput, check_count, read_png, write_png
from iphd.errors import ConfigError, DatasetError


def _staging_leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_commit_moves_staging_to_final(tmp_path):
    final = tmp_path / "sub" / "out"
    with StagedOutput(final, overwrite=False) as out:
        assert out.path.parent == final.parent
        assert out.path.name == f".out.partial-{os.getpid()}"
        (out.path / "a.txt").write_text("hello")
        assert not final.exists()
        assert out.commit() == final
    assert (final / "a.txt").read_text() == "hello"
    assert _staging_leftovers(final.parent) == []


def test_non_empty_existing_folder_without_overwrite_is_refused_and_untouched(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "keep.txt").write_text("old")
    with pytest.raises(DatasetError, match="already exists and is not empty.*--overwrite"):
        StagedOutput(final, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (final / "keep.txt").read_text() == "old"


def test_existing_file_without_overwrite_is_refused(tmp_path):
    final = tmp_path / "out"
    final.write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        StagedOutput(final, overwrite=False)
    assert final.read_text() == "x"


def test_empty_existing_folder_is_reused_without_overwrite(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    with StagedOutput(final, overwrite=False) as out:
        (out.path / "new.txt").write_text("n")
        out.commit()
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_commit_with_overwrite_replaces_old_content(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with StagedOutput(final, overwrite=True) as out:
        (out.path / "new.txt").write_text("new")
        assert (final / "old.txt").exists()  # old output stays until commit
        out.commit()
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert _staging_leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_block_leaves_nothing_behind(tmp_path, error):
    final = tmp_path / "out"
    with pytest.raises(error):
        with StagedOutput(final, overwrite=False) as out:
            (out.path / "half.txt").write_text("partial")
            raise error()
    assert list(tmp_path.iterdir()) == []


def test_exception_with_overwrite_keeps_the_old_output(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with StagedOutput(final, overwrite=True) as out:
            (out.path / "new.txt").write_text("new")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (final / "old.txt").read_text() == "old"


def test_exit_without_commit_removes_staging(tmp_path):
    final = tmp_path / "out"
    with StagedOutput(final, overwrite=False) as out:
        (out.path / "a.txt").write_text("a")
    assert list(tmp_path.iterdir()) == []


def test_commit_twice_is_refused(tmp_path):
    with StagedOutput(tmp_path / "out", overwrite=False) as out:
        out.commit()
        with pytest.raises(DatasetError, match="once"):
            out.commit()
    assert (tmp_path / "out").is_dir()


def test_folder_appearing_during_the_run_is_not_clobbered(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(DatasetError, match="appeared while this run was writing"):
        with StagedOutput(final, overwrite=False) as out:
            final.mkdir()
            (final / "theirs.txt").write_text("t")
            out.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (final / "theirs.txt").read_text() == "t"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_parent_is_refused(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(DatasetError, match=str(parent)):
            StagedOutput(parent / "out", overwrite=False)
        with pytest.raises(DatasetError, match="cannot create the parent folder"):
            StagedOutput(parent / "deeper" / "out", overwrite=False)
    finally:
        parent.chmod(0o700)


def test_parent_without_write_permission_is_refused_even_as_root(tmp_path, monkeypatch):
    # Root ignores permission bits, so simulate what os.access reports to a normal user.
    monkeypatch.setattr("iphd.data.output.os.access", lambda path, mode: False)
    with pytest.raises(DatasetError, match=f"folder {tmp_path} is not writable"):
        StagedOutput(tmp_path / "out", overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_parent_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(DatasetError, match="cannot create the parent folder .*blocker"):
        StagedOutput(blocker / "out", overwrite=False)


def test_check_count_names_the_option():
    assert check_count("--frames", 0) == 0
    assert check_count("--frames", np.int64(7)) == 7
    with pytest.raises(ConfigError, match=r"^--frames must be >= 0, got -3$"):
        check_count("--frames", -3)
    with pytest.raises(ConfigError, match="--workers must be >= 1, got 0"):
        check_count("--workers", 0, minimum=1)
    with pytest.raises(ConfigError, match="integer"):
        check_count("--frames", 2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="integer"):
        check_count("--frames", True)


def test_png_round_trip_is_exact_and_exclusive(tmp_path):
    rng = np.random.default_rng(1)
    depth = rng.integers(0, 65536, (7, 9), dtype=np.uint16)
    write_png(tmp_path / "d.png", depth)
    back = read_png(tmp_path / "d.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, depth)
    with pytest.raises(DatasetError, match="already written"):
        write_png(tmp_path / "d.png", depth)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="not a readable PNG"):
        read_png(tmp_path / "bad.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"not a readable PNG \(0 bytes\)"):
        read_png(tmp_path / "empty.png")
    with pytest.raises(DatasetError, match="does not exist"):
        read_png(tmp_path / "nope.png")
