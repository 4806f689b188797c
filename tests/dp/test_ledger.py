import json

import pytest

from dp.errors import InvalidPrivacyParameter
from dp.events import GaussianEvent, PoissonSampledGaussianEvent
from dp.ledger import LEDGER_NAME, POPULATION, PrivacyLedger


def test_commit_persists_and_reloads(tmp_path):
    path = tmp_path / LEDGER_NAME
    ledger = PrivacyLedger(1e-5)
    ledger.commit(1, {0: [PoissonSampledGaussianEvent(1.0, 0.1, 10)], POPULATION: [GaussianEvent(2.0)]}, path)
    ledger.commit(2, {0: [PoissonSampledGaussianEvent(1.0, 0.1, 10)], 1: [GaussianEvent(2.0)]}, path)
    back = PrivacyLedger.load(path)
    assert back.entries == ledger.entries and len(back.events) == 2  # each distinct event stored once
    for party in (0, 1, POPULATION):
        assert back.epsilon(party) == pytest.approx(ledger.epsilon(party))
    assert back.terms(0) == [(1.0, 0.1, 20)]  # composed across rounds, never reset
    assert [p.name for p in tmp_path.iterdir()] == [LEDGER_NAME]


def test_budget_is_check_then_commit():
    ledger = PrivacyLedger(1e-5, max_epsilon=5.0)
    event = GaussianEvent(2.0)
    spent = 0
    while ledger.within_budget(7, [event]):
        ledger.commit(spent, {7: [event]}, None)
        spent += 1
    assert spent > 0 and ledger.epsilon(7) <= 5.0
    before = ledger.terms(7)
    assert not ledger.within_budget(7, [event])
    assert ledger.terms(7) == before  # a refused check changes nothing


def test_an_invalid_spend_commits_nothing(tmp_path):
    ledger = PrivacyLedger(1e-5)

    class Broken(GaussianEvent):
        def terms(self):
            return [(-1.0, 1.0, 1)]

    with pytest.raises(InvalidPrivacyParameter):
        ledger.commit(1, {0: [GaussianEvent(1.0)], 1: [Broken(1.0)]}, tmp_path / LEDGER_NAME)
    assert ledger.entries == [] and not (tmp_path / LEDGER_NAME).exists()


def test_version_2_files_are_still_read(tmp_path):
    path = tmp_path / LEDGER_NAME
    path.write_text(json.dumps({"version": 2, "delta": 1e-5, "max_epsilon": None,
                                "events": [{"type": "GaussianEvent", "noise_multiplier": 2.0}],
                                "entries": [[1, 0, 0], [1, "population", 0], [2, 0, 0]]}))
    ledger = PrivacyLedger.load(path)
    assert ledger.terms(0) == [(2.0, 1.0, 2)] and ledger.terms(POPULATION) == [(2.0, 1.0, 1)]
    ledger.save(path)
    assert json.loads(path.read_text())["version"] == 4
    assert PrivacyLedger.load(path).entries == ledger.entries


@pytest.mark.parametrize("content", [
    "not json", "{}", json.dumps({"version": 1, "delta": 1e-5, "entries": []}),
    json.dumps({"version": 2, "delta": 1e-5, "events": [], "entries": [[1, 0, 0]]}),
    json.dumps({"version": 2, "delta": 1e-5, "events": [{"type": "GaussianEvent", "noise_multiplier": 1}],
                "entries": [[1, -3, 0]]}),
    json.dumps({"version": 2, "delta": 2.0, "events": [], "entries": []}),
    *[json.dumps({"version": 3, "delta": 1e-5, "events": [{"type": "GaussianEvent", "noise_multiplier": 1}],
                  "parties": [0, "population"], **columns}) for columns in (
        {"rounds": [1, 2], "party": [0], "event": [0, 0]},          # columns of different lengths
        {"rounds": [1.5], "party": [0], "event": [0]},              # not integers
        {"rounds": [1], "party": [2], "event": [0]},                # no such party
        {"rounds": [1], "party": [0], "event": [1]},                # no such event
        {"rounds": [1], "party": [-1], "event": [0]},
        {"rounds": [[1]], "party": [[0]], "event": [[0]]},
    )],
    json.dumps({"version": 3, "delta": 1e-5, "events": [], "parties": [0, 0], "rounds": [], "party": [],
                "event": []}),
    json.dumps({"version": 3, "delta": 1e-5, "events": [], "parties": ["alice"], "rounds": [], "party": [],
                "event": []}),
])
def test_bad_ledger_files_are_refused(tmp_path, content):
    path = tmp_path / LEDGER_NAME
    path.write_text(content)
    with pytest.raises(InvalidPrivacyParameter):
        PrivacyLedger.load(path)


def test_bad_settings():
    with pytest.raises(InvalidPrivacyParameter):
        PrivacyLedger(0.0)
    with pytest.raises(InvalidPrivacyParameter):
        PrivacyLedger(1e-5, max_epsilon=-1)


def test_a_party_never_mixes_units_or_relations(tmp_path):
    from dp.events import Unit

    ledger = PrivacyLedger(1e-5)
    ledger.commit(1, {0: [PoissonSampledGaussianEvent(1.0, 0.1)]}, tmp_path / LEDGER_NAME)
    with pytest.raises(InvalidPrivacyParameter, match="cannot be composed"):
        ledger.commit(2, {1: [GaussianEvent(1.0)], 0: [GaussianEvent(1.0)]}, tmp_path / LEDGER_NAME)
    assert ledger.terms(1) == [] and len(ledger.entries) == 1  # check-then-commit: nothing of round 2 added
    assert ledger.kind(0)[0] is Unit.EXAMPLE
    again = PrivacyLedger.load(tmp_path / LEDGER_NAME)
    assert again.kind(0) == ledger.kind(0) and again.events == ledger.events
