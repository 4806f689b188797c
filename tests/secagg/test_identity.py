"""Identity registries: the in-process PKI enrols on first sight; a party's pinned one never does."""

from __future__ import annotations

import pytest

from secagg.errors import AuthenticationError
from secagg.identity import IdentityRegistry
from secagg.primitives.keys import SigningKey


def test_a_pinned_registry_holds_its_own_key_and_refuses_anyone_outside_the_directory():
    keys = {c: SigningKey.generate() for c in range(3)}
    directory = {c: k.public_bytes() for c, k in keys.items()}
    mine = IdentityRegistry.pinned(directory, (1, keys[1]))
    assert mine.signing_key(1) is keys[1]
    mine.enrol([0, 1, 2])  # everyone known: nothing to do
    with pytest.raises(AuthenticationError, match="keeps its own signing key"):
        mine.signing_key(0)
    with pytest.raises(AuthenticationError, match="not in the pinned identity directory"):
        mine.enrol([0, 7])  # a participant the server made up is never given a key here
    assert set(mine.directory) == {0, 1, 2}


def test_a_pinned_registry_refuses_an_own_key_the_directory_does_not_hold():
    directory = {0: SigningKey.generate().public_bytes()}
    with pytest.raises(AuthenticationError, match="another identity key"):
        IdentityRegistry.pinned(directory, (0, SigningKey.generate()))


def test_the_in_process_registry_still_enrols_on_first_sight():
    registry = IdentityRegistry()
    registry.enrol([4])
    assert registry.signing_key(4).public_bytes() == registry.directory[4]
