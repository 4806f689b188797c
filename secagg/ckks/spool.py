"""Where the CKKS aggregator keeps each client's upload until the round ends: a temporary file, not memory.

The aggregator adds every upload to the running sum as it arrives, but it may still need one upload back:
to take a client that dropped at the challenge (or answered it falsely) out of the sum, and to find which
sketch was false. Kept in memory, the uploads would make the server's memory grow with clients x model; in
an unnamed temporary file (deleted when closed, or when the process ends) the server holds one offset and
length per ciphertext. ``TMPDIR`` chooses the disk.
"""

from __future__ import annotations

import os
import tempfile
from typing import IO

from secagg.errors import ResourceExhausted


class UploadSpool:
    """Append-only store of each client's serialized ciphertexts for one round."""

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None
        self._index: dict[int, list[tuple[int, int]]] = {}
        self._end = 0

    def put(self, client: int, blobs: tuple[bytes, ...]) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="secagg-ckks-uploads-")
        spans, end = [], self._end
        try:
            self._file.seek(end)
            for blob in blobs:
                self._file.write(blob)
                spans.append((end, len(blob)))
                end += len(blob)
            self._file.flush()  # get() reads the file itself, not the write buffer
        except OSError as err:
            size = sum(len(b) for b in blobs)
            raise ResourceExhausted(f"no room to keep client {client}'s {size:,}-byte upload until the round "
                                    f"ends ({err.strerror}; TMPDIR={tempfile.gettempdir()})") from None
        self._index[client], self._end = spans, end

    def get(self, client: int) -> tuple[bytes, ...]:
        if self._file is None or client not in self._index:
            raise KeyError(f"no upload of client {client} in the spool")
        out = []
        for offset, length in self._index[client]:
            out.append(os.pread(self._file.fileno(), length, offset))
        return tuple(out)

    def __contains__(self, client: int) -> bool:
        return client in self._index

    @property
    def bytes(self) -> int:
        return self._end

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._index, self._end = None, {}, 0
