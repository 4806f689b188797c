import os
from collections import Counter

import pytest

from secagg.errors import ConfigurationError
from secagg.masking.config import MaskingConfig
from secagg.masking.graph import graph_seed, neighbours, permutation


@pytest.mark.parametrize("n, k", [(10, 4), (50, 12), (101, 14), (7, 6), (5, 10)])
def test_graph_is_symmetric_and_regular(n, k):
    ids = list(range(100, 100 + n))
    g = neighbours(ids, k, os.urandom(32))
    degree = min(k, n - 1)
    for u, nbrs in g.items():
        assert u not in nbrs and len(nbrs) == degree
        assert all(u in g[v] for v in nbrs)


def test_same_seed_same_graph_and_seeds_differ():
    ids = list(range(40))
    seed = os.urandom(32)
    assert neighbours(ids, 6, seed) == neighbours(ids, 6, seed)
    assert neighbours(ids, 6, seed) != neighbours(ids, 6, os.urandom(32))


def test_permutation_positions_are_uniform():
    counts = Counter(permutation([0, 1, 2, 3], os.urandom(32))[0] for _ in range(4000))
    assert all(800 < counts[i] < 1200 for i in range(4))


def test_seed_binds_the_context_every_advertised_key_and_every_reveal():
    from secagg.aggregation import RoundContext
    from secagg.masking.messages import Advertisement, transcript_digest, write_key_list

    ads = [Advertisement(1, b"a" * 32, b"b" * 32), Advertisement(2, b"c" * 32, b"d" * 32)]
    body = write_key_list(ads)
    assert body == write_key_list(list(reversed(ads)))  # canonical order
    ctx = RoundContext(bytes(16), 1, (1, 2, 3), 10)
    seed = graph_seed(transcript_digest(ctx, body))
    other_list = write_key_list([ads[0], Advertisement(2, b"c" * 32, b"e" * 32)])
    others = [transcript_digest(ctx, other_list), transcript_digest(ctx, body, b"reveals"),
              transcript_digest(RoundContext(bytes(16), 2, (1, 2, 3), 10), body),
              transcript_digest(RoundContext(bytes([1]) * 16, 1, (1, 2, 3), 10), body),
              transcript_digest(RoundContext(bytes(16), 1, (1, 2), 10), body),
              transcript_digest(RoundContext(bytes(16), 1, (1, 2, 3), 11), body),
              transcript_digest(RoundContext(bytes(16), 1, (1, 2, 3), 10, 2), body)]
    assert all(seed != graph_seed(t) for t in others)


def test_default_degree_and_thresholds():
    cfg = MaskingConfig()
    assert cfg.degree(1000) == 20 and cfg.degree(8) == 6 and cfg.degree(5) == 4
    assert MaskingConfig(neighbors=0).degree(100) == 99
    assert MaskingConfig(neighbors=5).degree(100) == 6
    assert cfg.shamir_threshold(20) == 11
    assert MaskingConfig(threshold=11).shamir_threshold(20) == 11
    assert cfg.plan(1000) == (20, 11) and MaskingConfig(neighbors=0).plan(10) == (9, 5)
    for too_low in (3, 10):  # at or below half the degree: a split survivor view could rebuild both secrets
        with pytest.raises(ConfigurationError, match="half"):
            MaskingConfig(threshold=too_low).shamir_threshold(20)
    with pytest.raises(ConfigurationError):
        MaskingConfig(threshold=30).shamir_threshold(20)
    with pytest.raises(ConfigurationError):
        cfg.degree(1)
    for bad in (dict(threshold=0), dict(threshold=1.5), dict(threshold=0.3), dict(threshold=0.49), dict(neighbors=-1), dict(threshold=True)):
        with pytest.raises(ConfigurationError):
            MaskingConfig(**bad)
