"""Reading checkpoints: every failure names the file and what is wrong, with nothing unsafe."""

import pickle

import pytest
import torch

from iphd.checkpoints import read_payload
from iphd.errors import CheckpointError, load_failure


class _Anything:
    """A class of the writer's own: torch's weights_only loading refuses to rebuild it."""


def test_a_file_that_does_not_read_is_named_without_advice_to_unpickle_it(tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "x", "obj": _Anything()}, pickled)
    with pytest.raises(CheckpointError) as refused:
        read_payload(pickled, "x", 1, "detector", "re-train it")
    message = str(refused.value)
    assert message.startswith(f"{pickled} is not a readable torch checkpoint (it holds pickled")
    assert "weights_only" not in message and "arbitrary code" not in message
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not the rest")
    with pytest.raises(CheckpointError, match="truncated.pt is not a readable torch checkpoint"):
        read_payload(truncated, "x", 1, "detector", "re-train it")
    # Bytes that are no checkpoint at all: torch falls back to unpickling them and says so;
    # that is not a file of pickled objects.
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="its bytes are not a file of this kind") as refused:
        read_payload(garbage, "x", 1, "detector", "re-train it")
    assert "pickled" not in str(refused.value) and "weights_only" not in str(refused.value)
    # One line, however long the library's message.
    assert load_failure(ValueError("first\n" + "x" * 500)) == "ValueError: first"
    assert load_failure(pickle.UnpicklingError("bad")) == "UnpicklingError: bad"
    assert load_failure(OSError()) == "OSError"
