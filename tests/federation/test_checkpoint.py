import numpy as np
import pytest

from federation import checkpoint
from federation.errors import CheckpointError, OutputError


def state(round_=2):
    return checkpoint.ServerState(round_, np.arange(5, dtype=np.float32), {"m": np.ones(5)},
                                  {"bit_generator": "PCG64", "state": {"state": 2**100, "inc": 3}},
                                  [{"round": 1}], {"k": "v"})


def test_round_trip(tmp_path):
    checkpoint.save(tmp_path, state())
    back = checkpoint.load(tmp_path)
    assert back.round == 2 and back.rng_state["state"]["state"] == 2**100
    np.testing.assert_array_equal(back.params, np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(back.optimizer_state["m"], np.ones(5))
    assert back.history == [{"round": 1}] and back.config == {"k": "v"}


def test_overwrite_leaves_no_temporary_files(tmp_path):
    checkpoint.save(tmp_path, state(1))
    checkpoint.save(tmp_path, state(2))
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_NAME]
    assert checkpoint.load(tmp_path).round == 2


@pytest.mark.parametrize("content", [b"", b"garbage", b"PK\x03\x04broken zip"])
def test_corrupt_checkpoint_raises(tmp_path, content):
    (tmp_path / checkpoint.CHECKPOINT_NAME).write_bytes(content)
    with pytest.raises(CheckpointError, match="unreadable"):
        checkpoint.load(tmp_path)


def test_pickled_arrays_are_never_loaded(tmp_path):
    path = tmp_path / checkpoint.CHECKPOINT_NAME
    with open(path, "wb") as f:
        np.savez(f, params=np.array([object()], dtype=object), meta=np.zeros(1, np.uint8))
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("failing", ["mkstemp", "fsync", "replace"])
def test_a_failed_write_is_an_output_error_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, failing):
    import errno
    import os
    import tempfile

    checkpoint.save(tmp_path, state(1))
    kept = (tmp_path / checkpoint.CHECKPOINT_NAME).read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tempfile if failing == "mkstemp" else os, failing, full)
    with pytest.raises(OutputError, match="No space left on device") as raised:
        checkpoint.save(tmp_path, state(2))
    monkeypatch.undo()
    assert raised.value.path == tmp_path / checkpoint.CHECKPOINT_NAME and isinstance(raised.value, OSError)
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT_NAME]
    assert (tmp_path / checkpoint.CHECKPOINT_NAME).read_bytes() == kept


def test_a_directory_under_a_file_is_an_output_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="cannot write"):
        checkpoint.save(tmp_path / "file" / "run", state())
