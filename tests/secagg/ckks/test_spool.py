"""The CKKS aggregator's upload spool: uploads come back as put, and a full disk is a typed refusal."""

import errno
import tempfile

import pytest

from secagg.ckks.spool import UploadSpool
from secagg.errors import ResourceExhausted


def test_uploads_come_back_as_they_were_put():
    spool = UploadSpool()
    spool.put(3, (b"abc", b"", b"defg"))
    spool.put(1, (b"x" * 70000,))
    assert spool.get(3) == (b"abc", b"", b"defg") and spool.get(1) == (b"x" * 70000,)
    assert 3 in spool and 2 not in spool and spool.bytes == 70007
    spool.close()
    assert 3 not in spool


def test_a_full_disk_is_a_typed_refusal_that_names_the_size(monkeypatch):
    class Full:
        def seek(self, offset):
            pass

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **kw: Full())
    with pytest.raises(ResourceExhausted, match="client 7's 1,000-byte upload.*No space left"):
        UploadSpool().put(7, (b"a" * 1000,))
    assert issubclass(ResourceExhausted, MemoryError)


def test_a_short_upload_comes_back_whole_even_when_it_is_the_last_one_written():
    """get() reads the file, not put()'s write buffer (found by review: small last uploads came back empty)."""
    spool = UploadSpool()
    spool.put(1, (b"a" * 100, b"b" * 50))
    assert spool.get(1) == (b"a" * 100, b"b" * 50)
    spool.put(3, (b"d" * 3000, b"e" * 20000, b"f" * 10))
    assert spool.get(3) == (b"d" * 3000, b"e" * 20000, b"f" * 10)
    with pytest.raises(KeyError):
        spool.get(2)
