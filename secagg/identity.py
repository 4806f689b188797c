"""Client identity keys (Ed25519) and the public directory every party verifies signatures against.

In a deployment each client keeps its own signing key and a public-key infrastructure distributes the
directory; in the in-process runtime this registry plays both roles, enrolling each client on first sight.
"""

from __future__ import annotations

from typing import Iterable

from secagg.primitives.keys import SigningKey


class IdentityRegistry:
    def __init__(self) -> None:
        self._keys: dict[int, SigningKey] = {}
        self.directory: dict[int, bytes] = {}

    def enrol(self, clients: Iterable[int]) -> None:
        for c in clients:
            if c not in self._keys:
                self._keys[c] = SigningKey.generate()
                self.directory[c] = self._keys[c].public_bytes()

    def signing_key(self, client: int) -> SigningKey:
        self.enrol([client])
        return self._keys[client]
