"""Client identity keys (Ed25519) and the public directory every party verifies signatures against.

In a deployment each client keeps its own signing key and a public-key infrastructure distributes the
directory; in the in-process runtime this registry plays both roles, enrolling each client on first sight.
"""

from __future__ import annotations

from typing import Iterable

from secagg.errors import AuthenticationError
from secagg.primitives.keys import PUBLIC_KEY_BYTES, SigningKey


class IdentityRegistry:
    """In-process, it enrols each client on first sight. :meth:`pinned` makes the registry of a party in a
    deployment instead: a fixed directory (and the party's own signing key, if it is a client) that never
    enrols anyone."""

    def __init__(self) -> None:
        self._keys: dict[int, SigningKey] = {}
        self.directory: dict[int, bytes] = {}
        self.sealed = False

    @classmethod
    def pinned(cls, directory: dict[int, bytes], own: tuple[int, SigningKey] | None = None) -> IdentityRegistry:
        """The directory a party pinned and, for client ``own[0]``, its own key ``own[1]`` (which must be the
        directory's entry for it); a client outside the directory is refused, never enrolled."""
        self = cls()
        for client, key in directory.items():
            self.register(client, key)
        if own is not None:
            client, key = own
            if self.directory.get(client) != key.public_bytes():
                raise AuthenticationError(f"the directory holds another identity key for client {client} than its own")
            self._keys[client] = key
        self.sealed = True
        return self

    def register(self, client: int, public_key: bytes) -> None:
        """Record the public identity key of a client that holds its signing key itself (a remote client)."""
        if len(public_key) != PUBLIC_KEY_BYTES:
            raise AuthenticationError(f"identity key of client {client} is {len(public_key)} bytes, "
                                      f"not {PUBLIC_KEY_BYTES}")
        if self.directory.get(client, public_key) != public_key:
            raise AuthenticationError(f"client {client} is already enrolled with another identity key")
        self.directory[client] = bytes(public_key)

    def enrol(self, clients: Iterable[int]) -> None:
        """Create identity keys for clients this registry has not seen (the in-process simulation's PKI); a
        pinned registry refuses them instead (:class:`AuthenticationError`)."""
        for c in clients:
            if c not in self.directory:
                if self.sealed:
                    raise AuthenticationError(f"client {c} is not in the pinned identity directory")
                self._keys[c] = SigningKey.generate()
                self.directory[c] = self._keys[c].public_bytes()

    def signing_key(self, client: int) -> SigningKey:
        self.enrol([client])
        if client not in self._keys:
            raise AuthenticationError(f"client {client} keeps its own signing key: this registry has none")
        return self._keys[client]
