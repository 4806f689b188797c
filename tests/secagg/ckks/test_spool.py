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
