"""Typed settings: validation at construction, and a lossless JSON round trip."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.config import CKKS, DPSGD, CentralDP, DistributedDP, Masking, from_dict, to_dict
from federation.errors import ConfigError

positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
budget = dict(noise_multiplier=positive, delta=st.floats(min_value=1e-9, max_value=0.5),
              max_epsilon=st.none() | positive)
settings = st.one_of(
    st.none(),
    st.builds(Masking, neighbors=st.none() | st.integers(0, 64), threshold=st.floats(0.5, 1.0) | st.integers(1, 9),
              consistency_check=st.booleans(), clip=positive, precision_bits=st.integers(8, 24),
              quorum=st.floats(0.5, 0.99)),
    st.builds(CKKS, clip=positive),
    st.builds(DPSGD, **budget, max_grad_norm=positive, secure_mode=st.booleans()),
    st.builds(CentralDP, **budget, clip=positive, adaptive_quantile=st.none() | st.floats(0.05, 0.95),
              count_noise=st.none() | st.floats(1.0, 10.0)),
    st.builds(DistributedDP, **budget, clip=positive),
)


@given(settings)
def test_every_setting_survives_a_json_round_trip(setting):
    assert from_dict(json.loads(json.dumps(to_dict(setting)))) == setting


@pytest.mark.parametrize("make, message", [
    (lambda: DPSGD(), "exactly one"),
    (lambda: DPSGD(noise_multiplier=1.0, target_epsilon=1.0), "exactly one"),
    (lambda: CentralDP(noise_multiplier=-1.0), "positive"),
    (lambda: DistributedDP(target_epsilon=1.0, delta=1.0), "delta"),
    (lambda: DPSGD(noise_multiplier=1.0, max_grad_norm=0.0), "clip norm"),
    (lambda: CentralDP(noise_multiplier=1.0, adaptive_quantile=1.5), "quantile"),
    (lambda: Masking(threshold=0.3), "threshold"),
    (lambda: Masking(precision_bits=0), "Masking"),
    (lambda: CKKS(clip=float("inf")), "clip"),
])
def test_bad_settings_are_refused_at_construction(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize("d", [{"kind": "rot13"}, {"clip": 1.0}, [], {"kind": "ckks", "clip": 1.0, "modulus": 3}])
def test_unknown_kinds_and_fields_are_refused(d):
    with pytest.raises(ConfigError):
        from_dict(d)
