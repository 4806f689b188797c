"""Empirical privacy audit of a training job in one run: canaries in, a lower bound on epsilon out.

Each of m canaries is included with probability 1/2 (bits from ``secrets``, see :mod:`dp.empirical`), the
job trains once, and the auditor scores every canary from the final model only:

- example level (DP-SGD or no DP): canaries are out-of-distribution inputs (Gaussian vectors, far from any
  digit) with random labels, dealt round-robin to the clients' data; the score is minus the final model's
  loss on the canary (a memorized canary has a low loss; calibrating by the mean loss over all labels, or by
  the initial model's, did no better on the default job);
- client level (central or distributed DP, or no DP): canary clients whose update is a fixed random direction
  of L2 norm equal to the clip; the score is the dot product of the final model's change with the direction
  (the white-box "gradient canary" of the paper's federated setting, observed only in the final model).

The correct guesses give the lower bound (:func:`dp.empirical.best_audit`), reported beside the accountant's
upper bound at the same delta. A lower bound above the upper bound would mean a bug in the accounting or in
the implementation of the noise.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset, TensorDataset

from dp.empirical import best_audit, inclusion_bits
from federation.config import DPSGD
from federation.data import load_dataset
from federation.errors import ConfigError
from federation.experiment_config import ExperimentConfig
from federation.models import mlp
from federation.params import get_vector, set_vector
from federation.partition import partition_dataset
from federation.server import Federation

EXAMPLE, CLIENT = "example", "client"
REPORT_NAME, PLOT_NAME = "empirical.json", "empirical.png"
_DEFAULT_DELTA = 1e-5  # for runs without DP: the delta the lower bound is stated at


@dataclass(frozen=True)
class CanaryAudit:
    """One audited run: ``m`` canaries (``included`` of them trained on), ``guesses`` made, ``correct`` ones,
    the lower bound they give and the accountant's upper bound (None without DP), both at ``delta``."""

    level: str
    m: int
    included: int
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    epsilon_lower: float
    epsilon_upper: float | None
    delta: float
    confidence: float
    noise_multiplier: float | None
    rounds: int
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_level(config: ExperimentConfig) -> str:
    """Example level for DP-SGD (and no DP), client level for central and distributed DP."""
    dp = config.privacy_mode()
    return EXAMPLE if dp is None or isinstance(dp, DPSGD) else CLIENT


def audit_job(config: ExperimentConfig, canaries: int, *, level: str | None = None, confidence: float = 0.05,
              canary_scale: float = 1.0) -> tuple[CanaryAudit, Federation]:
    """Train ``config``'s job once with ``canaries`` canaries and audit it; returns the audit and the trained
    federation (its ``history`` and final ``model``)."""
    level = level or default_level(config)
    if level not in (EXAMPLE, CLIENT):
        raise ConfigError(f"canary level must be {EXAMPLE!r} or {CLIENT!r}, got {level!r}")
    if canaries < 2:
        raise ConfigError(f"need at least 2 canaries, got {canaries}")
    dp = config.privacy_mode()
    if level == CLIENT and isinstance(dp, DPSGD):
        raise ConfigError("client-level canaries audit client-level DP (central, distributed) or no DP, "
                          "not DP-SGD: use example-level canaries")
    data = load_dataset(config.dataset, seed=config.seed)
    torch.manual_seed(config.seed)
    model = mlp(data.num_features, data.num_classes, config.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    shards: list[Any] = partition_dataset(data.train, config.clients, config.partition, alpha=config.alpha,
                                          seed=config.seed)
    included = inclusion_bits(canaries)
    generator = torch.Generator().manual_seed(config.seed + 1)  # canary contents are public, not secrets
    federation = Federation(model, secure=config.protection(), dp=dp, test_data=data.test,
                            config=config.federation_config(), preprocessing=data.preprocessing)
    if level == EXAMPLE:
        x = torch.randn(canaries, data.num_features, generator=generator) * canary_scale
        y = torch.randint(0, data.num_classes, (canaries,), generator=generator)
        pool = TensorDataset(x, y)
        for c, shard in enumerate(shards):
            mine = [i for i in range(c, canaries, config.clients) if included[i]]
            data_c = ConcatDataset([shard, Subset(pool, mine)]) if mine else shard
            federation.add_client(DataLoader(data_c, batch_size=config.batch_size, shuffle=True), optimizer)
        federation.run()
        scores = -_losses(federation.model, x, y)
    else:
        for shard in shards:
            federation.add_client(DataLoader(shard, batch_size=config.batch_size, shuffle=True), optimizer)
        start = get_vector(model)
        clip = config.privacy.clip if config.privacy is not None else 1.0
        directions = torch.randn(canaries, start.size, generator=generator, dtype=torch.float64).numpy()
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        size = max(1, round(np.mean([len(s) for s in shards])))  # FedAvg weight of an average client
        dummy = TensorDataset(torch.zeros(size, data.num_features), torch.zeros(size, dtype=torch.int64))
        for i in np.flatnonzero(included):
            step = (directions[i] * clip * (1 - 1e-6) / config.local_epochs).astype(np.float32)
            federation.add_client(DataLoader(dummy, batch_size=size), optimizer, _FixedUpdate(step))
        federation.run()
        scores = directions @ (get_vector(federation.model) - start).astype(np.float64)
    history = federation.history
    delta = dp.delta if dp is not None else _DEFAULT_DELTA
    upper = history.epsilon(delta=delta) if dp is not None else None
    result = best_audit(scores, included, delta=delta, confidence=confidence)
    audit = CanaryAudit(level, result.m, result.included, result.k_plus, result.k_minus, result.guesses,
                        result.correct, result.epsilon_lower, None if upper is None or math.isinf(upper) else upper,
                        delta, confidence, federation.noise_multiplier, len(history), history.final_accuracy)
    return audit, federation


class _FixedUpdate:
    """A canary client's training function: whatever the data, move the model by ``step`` per local epoch."""

    def __init__(self, step: np.ndarray) -> None:
        self.step = step

    def __call__(self, model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> None:
        set_vector(model, get_vector(model) + self.step)


def _losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y, reduction="none").double().numpy()


def plot_bounds(audits: Sequence[CanaryAudit], path: Path | str, labels: Sequence[str] | None = None) -> Path:
    """A bar chart of each run's empirical lower bound beside its accounted upper bound."""
    from matplotlib.figure import Figure  # lazily: matplotlib only when a plot is asked for

    path = Path(path)
    labels = list(labels) if labels is not None else [_label(a) for a in audits]
    fig = Figure(figsize=(max(4.0, 2.2 * len(audits)), 4))
    ax = fig.subplots()
    at = np.arange(len(audits))
    lower = [a.epsilon_lower for a in audits]
    upper = [a.epsilon_upper if a.epsilon_upper is not None else 0.0 for a in audits]
    ax.bar(at - 0.2, lower, 0.4, label="empirical lower bound (one run)")
    bars = ax.bar(at + 0.2, upper, 0.4, label="accounted upper bound (RDP)")
    for bar, a in zip(bars, audits):
        if a.epsilon_upper is None:
            ax.annotate("no DP", (bar.get_x() + bar.get_width() / 2, 0), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(at, labels, fontsize=8)
    ax.set_yscale("symlog", linthresh=1.0)
    delta = audits[0].delta if audits else _DEFAULT_DELTA
    ax.set(ylabel=f"epsilon at delta={delta:g}", title="Empirical vs accounted privacy")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _label(a: CanaryAudit) -> str:
    z = "no noise" if a.noise_multiplier is None else f"z={a.noise_multiplier:.3g}"
    return f"{a.level}, {z}\n{a.rounds} rounds, m={a.m}"


def report(audits: Sequence[CanaryAudit], plot: Path | None = None) -> dict[str, Any]:
    """JSON-ready: every audit, and the plot's path."""
    return {"method": "one-run audit (Steinke, Nasr, Jagielski 2023)",
            "audits": [a.to_dict() for a in audits], "plot": str(plot) if plot is not None else None}


def run_empirical_audit(config: ExperimentConfig, canaries: int, out: Path | str, *, level: str | None = None,
                        confidence: float = 0.05, overwrite: bool = False) -> dict[str, Any]:
    """``secagg audit --empirical``: train ``config`` once with ``canaries`` canaries, save the run into
    ``out`` (results.json, ledger.json, model.npz: ``secagg audit OUT`` reads them) with ``empirical.json``
    and ``empirical.png``; returns the report."""
    out = Path(out)
    audit, federation = audit_job(config, canaries, level=level, confidence=confidence)
    federation.save(out, overwrite=overwrite)
    doc = report([audit], plot_bounds([audit], out / PLOT_NAME))
    (out / REPORT_NAME).write_text(json.dumps(doc, indent=2))
    return doc
