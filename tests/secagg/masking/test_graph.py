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


def test_seed_binds_every_advertised_key():
    from secagg.masking.messages import Advertisement, write_key_list

    ads = [Advertisement(1, b"a" * 32, b"b" * 32), Advertisement(2, b"c" * 32, b"d" * 32)]
    body = write_key_list(ads)
    assert body == write_key_list(list(reversed(ads)))  # canonical order
    seed = graph_seed(bytes(16), 1, body)
    assert seed != graph_seed(bytes(16), 1, write_key_list([ads[0], Advertisement(2, b"c" * 32, b"e" * 32)]))
    assert seed != graph_seed(bytes(16), 2, body)
    assert seed != graph_seed(bytes([1]) * 16, 1, body)


def test_default_degree_and_thresholds():
    cfg = MaskingConfig()
    assert cfg.degree(1000) == 20 and cfg.degree(8) == 6 and cfg.degree(5) == 4
    assert MaskingConfig(neighbors=0).degree(100) == 99
    assert MaskingConfig(neighbors=5).degree(100) == 6
    assert cfg.shamir_threshold(20) == 11
    assert MaskingConfig(threshold=3).shamir_threshold(20) == 3
    with pytest.raises(ConfigurationError):
        MaskingConfig(threshold=30).shamir_threshold(20)
    with pytest.raises(ConfigurationError):
        cfg.degree(1)
    for bad in (dict(threshold=0), dict(threshold=1.5), dict(neighbors=-1), dict(threshold=True)):
        with pytest.raises(ConfigurationError):
            MaskingConfig(**bad)
