"""The one-run audit's statistics (Steinke, Nasr, Jagielski 2023): bounds that are large when the guesses are
perfect, zero when they are random, monotone, and never above a true epsilon (randomized response)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dp.empirical import (audit, best_audit, default_choices, epsilon_lower_bound, guess, inclusion_bits,
                          p_value)
from dp.errors import InvalidPrivacyParameter


def test_perfect_guesses_on_many_canaries_give_a_large_bound() -> None:
    # all r guesses right: P = q^r < 0.05 exactly when eps > logit(0.05^(1/r))
    for r in (100, 1000):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(r, r, r) == pytest.approx(math.log(q / (1 - q)), rel=1e-6)
    assert epsilon_lower_bound(1000, 1000, 1000) > 5.5
    assert epsilon_lower_bound(1000, 600, 600, delta=1e-5) > 5.0  # the paper's reference example


def test_chance_level_guesses_give_zero() -> None:
    assert epsilon_lower_bound(1000, 1000, 500) == 0.0
    assert epsilon_lower_bound(1000, 1000, 520) == 0.0  # within noise of a coin
    assert epsilon_lower_bound(10, 0, 0) == 0.0


def test_pure_p_value_is_the_binomial_tail() -> None:
    q = 1 / (1 + math.exp(-1.3))
    assert p_value(50, 40, 30, 1.3) == pytest.approx(stats.binom.sf(29, 40, q))


def test_delta_only_weakens_the_bound() -> None:
    for v in (60, 80, 100):
        assert epsilon_lower_bound(100, 100, v, delta=1e-3) <= epsilon_lower_bound(100, 100, v)
    # a delta so large that its term alone exceeds the level: nothing can be concluded
    assert p_value(100, 100, 100, 0.0, 0.1) >= 0.05
    assert epsilon_lower_bound(100, 100, 100, delta=0.1) == 0.0


@settings(max_examples=40, deadline=None)
@given(r=st.integers(1, 300), data=st.data(), delta=st.sampled_from([0.0, 1e-6, 1e-4]))
def test_bound_is_monotone_in_correct_guesses(r: int, data: st.DataObject, delta: float) -> None:
    v = data.draw(st.integers(0, r - 1))
    assert epsilon_lower_bound(r, r, v, delta=delta) <= epsilon_lower_bound(r, r, v + 1, delta=delta) + 1e-9


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 200), data=st.data())
def test_p_value_grows_with_epsilon(m: int, data: st.DataObject) -> None:
    r = data.draw(st.integers(0, m))
    v = data.draw(st.integers(0, r))
    values = [p_value(m, r, v, eps, 1e-5) for eps in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)]
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("epsilon", [0.5, 2.0, 4.0])
def test_bound_never_exceeds_the_epsilon_of_randomized_response(epsilon: float) -> None:
    # eps-DP randomized response on every canary: the 95 % bound exceeds eps in at most ~5 % of trials
    rng = np.random.default_rng(7)  # a simulation in a test, not a secret
    m, trials, over, bounds = 500, 60, 0, []
    for _ in range(trials):
        included = rng.random(m) < 0.5
        truthful = rng.random(m) < 1 / (1 + math.exp(-epsilon))
        scores = np.where(included == truthful, 1.0, -1.0) + rng.random(m) * 1e-3
        result = audit(scores, included, k_plus=int((scores > 0).sum()), k_minus=int((scores < 0).sum()))
        assert result.guesses == m
        over += result.epsilon_lower > epsilon
        bounds.append(result.epsilon_lower)
    assert over <= 0.15 * trials
    assert np.mean(bounds) > 0.5 * epsilon  # and informative: not far below eps on average


def test_guess_and_audit_count_what_they_should() -> None:
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    assert guess(scores, 2, 1).tolist() == [1, 1, 0, 0, 0, -1]
    result = audit(scores, [True, False, True, False, False, False], k_plus=2, k_minus=2)
    assert (result.guesses, result.correct, result.included) == (4, 3, 2)
    assert result.to_dict()["m"] == 6


def test_best_audit_pays_for_the_choices_it_tries() -> None:
    m = 400
    included = np.arange(m) % 2 == 0
    scores = included.astype(float)  # perfectly separated
    best = best_audit(scores, included)
    assert best.tried == len(default_choices(m))
    assert best.correct == best.guesses == m
    assert best.epsilon_lower < epsilon_lower_bound(m, m, m)  # Bonferroni costs something
    assert best.epsilon_lower == pytest.approx(epsilon_lower_bound(m, m, m, confidence=0.05 / best.tried))


def test_inclusion_bits_are_fair_and_unpredictable() -> None:
    bits = inclusion_bits(4000)
    assert bits.dtype == bool and bits.shape == (4000,)
    assert 1800 < bits.sum() < 2200
    assert not np.array_equal(bits, inclusion_bits(4000))


@pytest.mark.parametrize("args", [(10, 11, 5), (10, 5, 6), (10, 5, -1)])
def test_impossible_counts_are_refused(args: tuple[int, int, int]) -> None:
    with pytest.raises(InvalidPrivacyParameter):
        epsilon_lower_bound(*args)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(InvalidPrivacyParameter):
        epsilon_lower_bound(10, 10, 10, confidence=1.0)
    with pytest.raises(InvalidPrivacyParameter):
        p_value(10, 10, 10, -1.0)
    with pytest.raises(InvalidPrivacyParameter):
        guess([1.0, 2.0], 2, 1)
    with pytest.raises(InvalidPrivacyParameter):
        audit([1.0, 2.0], [True], k_plus=1, k_minus=0)
    with pytest.raises(InvalidPrivacyParameter):
        inclusion_bits(0)
