"""The federated round loop: sampling, dropouts, aggregation through the seam, server optimizer, evaluation.

The loop knows only the :class:`~secagg.aggregation.Aggregator` interface and a runtime, so plaintext,
masking and CKKS are interchangeable, and so are the in-process and distributed runtimes.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dp.dpsgd import DPSGDConfig
from dp.events import PrivacyEvent
from federation import checkpoint
from federation.client import FederatedClient, TrainFn, train_epoch
from federation.errors import CheckpointError, ConfigError
from federation.params import dimension, get_vector, set_vector
from federation.privacy import PrivacyBook
from federation.runtime import ClientReport, ClientStatus, InProcessRuntime, RoundOutcome, Runtime, abort
from federation.strategy import ServerOptimizer, Strategy
from secagg.aggregation import Aggregator, RoundContext
from secagg.errors import SecAggError
from secagg.plaintext import PlaintextAggregator

log = logging.getLogger(__name__)


class RoundStatus(enum.Enum):
    OK = "ok"
    ABORTED = "aborted"


@dataclass(frozen=True)
class FederationConfig:
    """Round-loop settings. ``clients_per_round``: an int (a number), a float in (0, 1] (a fraction) or None (all)."""

    rounds: int = 10
    clients_per_round: int | float | None = None
    local_epochs: int = 1
    strategy: Strategy = field(default_factory=Strategy)
    dropout: float = 0.0
    min_clients: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}")
        if self.local_epochs < 1:
            raise ConfigError(f"local epochs must be at least 1, got {self.local_epochs}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.min_clients < 1:
            raise ConfigError(f"min_clients must be at least 1, got {self.min_clients}")
        cpr = self.clients_per_round
        if isinstance(cpr, float) and not 0.0 < cpr <= 1.0:
            raise ConfigError(f"a fraction of clients per round must be in (0, 1], got {cpr}")
        if isinstance(cpr, int) and cpr < 1:
            raise ConfigError(f"clients per round must be at least 1, got {cpr}")

    def sample_size(self, num_clients: int) -> int:
        cpr = self.clients_per_round
        if cpr is None:
            return num_clients
        if isinstance(cpr, float):
            return max(1, math.ceil(cpr * num_clients))
        if cpr > num_clients:
            raise ConfigError(f"{cpr} clients per round but only {num_clients} clients")
        return cpr

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["strategy"] = {**asdict(self.strategy), "name": self.strategy.name.value}
        return d


@dataclass(frozen=True)
class RoundRecord:
    """What one round did; ``to_dict`` is the row written to results.json."""

    round: int
    status: RoundStatus
    accuracy: float | None
    loss: float | None
    clients: list[int]
    dropped: list[int]
    rejected: list[int]
    survivors: int
    bytes_up: float
    bytes_down: float
    client_seconds: float
    server_seconds: float
    per_client: list[dict[str, Any]]
    privacy_events: list[dict[str, Any]]
    abort_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


def derive_seed(seed: int, round_index: int, client: int) -> int:
    """An independent, reproducible seed for one client's local training in one round."""
    return int(np.random.SeedSequence([seed, round_index, client]).generate_state(1)[0])


def evaluate(model: nn.Module, data: Dataset, loss_fn: nn.Module, batch_size: int = 512) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``data``."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for xb, yb in DataLoader(data, batch_size=batch_size):
            out = model(xb)
            total_loss += float(loss_fn(out, yb)) * len(yb)
            correct += int((out.argmax(dim=1) == yb).sum())
            count += len(yb)
    return total_loss / count, correct / count


class Federation:
    """A federated training job over the user's model and clients.

    ``model`` holds the global model (and is left holding the final one). ``aggregator`` is the protection
    mode (plaintext by default). With ``checkpoint_dir`` the server state is saved atomically after each
    round and ``run(resume=True)`` continues from the last complete round.
    """

    def __init__(self, model: nn.Module, *, test_data: Dataset | None = None, aggregator: Aggregator | None = None,
                 loss_fn: nn.Module | None = None, checkpoint_dir: Path | str | None = None,
                 run_info: dict[str, Any] | None = None, config: FederationConfig | None = None,
                 privacy: PrivacyBook | None = None, dp_sgd: DPSGDConfig | None = None,
                 runtime: Runtime | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise ConfigError("pass either config or individual settings, not both")
        self.config = config or FederationConfig(**settings)
        self.model = model
        self.test_data = test_data
        self.aggregator = aggregator or PlaintextAggregator()
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.run_info = run_info or {}
        self.runtime: Runtime = runtime or InProcessRuntime()
        self.privacy, self.dp_sgd = privacy, dp_sgd
        self.clients: dict[int, Any] = {}  # what the runtime reaches each client by
        self.history: list[RoundRecord] = []

    def add_client(self, loader: DataLoader, optimizer: torch.optim.Optimizer, train_fn: TrainFn = train_epoch,
                   model: nn.Module | None = None) -> int:
        """Register a client's data and training code; returns its id. ``model`` defaults to the global one."""
        client_id = len(self.clients)
        self.clients[client_id] = FederatedClient(
            model if model is not None else self.model, optimizer, loader, train_fn,
            local_epochs=self.config.local_epochs, proximal_mu=self.config.strategy.client_proximal_mu,
            dp_sgd=self.dp_sgd)
        return client_id

    def add_remote_client(self, address: Any) -> int:
        """Register a client that runs elsewhere; ``address`` is what the runtime reaches it by."""
        if self.privacy is not None or self.dp_sgd is not None:
            raise ConfigError("privacy accounting of remote clients is not supported yet")
        client_id = len(self.clients)
        self.clients[client_id] = address
        return client_id

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint: everything but the number of rounds."""
        cfg = self.config.describe()
        cfg.pop("rounds")
        return {"federation": cfg, "clients": len(self.clients), "dimension": dimension(self.model),
                "aggregator": type(self.aggregator).__name__, **self.run_info}

    def run(self, *, resume: bool = False, on_round: Callable[[RoundRecord], None] | None = None) -> list[RoundRecord]:
        """Train for the configured rounds; returns the history of every round (resumed ones included)."""
        if not self.clients:
            raise ConfigError("no clients: call add_client first")
        cfg = self.config
        sample_size = cfg.sample_size(len(self.clients))
        if sample_size < cfg.min_clients:
            raise ConfigError(f"{sample_size} clients per round cannot meet min_clients={cfg.min_clients}")
        params = get_vector(self.model)
        optimizer = ServerOptimizer(cfg.strategy, params.size)
        rng = np.random.default_rng(cfg.seed)  # client sampling and simulated dropouts: not secrets
        done = 0
        if resume:
            done, params = self._restore(optimizer, rng)
            if self.privacy is not None:
                self.privacy.resume()
        for r in range(done + 1, cfg.rounds + 1):
            if self.privacy is not None and not self.privacy.population_allows_another_round():
                break
            record, params = self._round(r, params, optimizer, rng, sample_size)
            self.history.append(record)
            set_vector(self.model, params)
            if self.checkpoint_dir is not None:
                checkpoint.save(self.checkpoint_dir, checkpoint.ServerState(
                    r, params, optimizer.state, rng.bit_generator.state,
                    [h.to_dict() for h in self.history], self.fingerprint()))
            if on_round is not None:
                on_round(record)
        set_vector(self.model, params)
        return self.history

    def _restore(self, optimizer: ServerOptimizer, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        if self.checkpoint_dir is None:
            raise ConfigError("resume needs a checkpoint directory")
        try:
            state = checkpoint.load(self.checkpoint_dir)
        except CheckpointError:
            if not (self.checkpoint_dir / checkpoint.CHECKPOINT_NAME).exists():
                log.info("no checkpoint in %s: starting from round 1", self.checkpoint_dir)
                return 0, get_vector(self.model)
            raise
        if state.config != self.fingerprint():
            raise CheckpointError("checkpoint belongs to a different configuration (only --rounds may change)")
        if state.round > self.config.rounds:
            raise CheckpointError(f"checkpoint is at round {state.round}, past the {self.config.rounds} asked for")
        optimizer.load_state(state.optimizer_state)
        rng.bit_generator.state = state.rng_state
        self.history = [record_from_dict(h) for h in state.history]
        set_vector(self.model, state.params)
        return state.round, state.params

    def _round(self, r: int, params: np.ndarray, optimizer: ServerOptimizer, rng: np.random.Generator,
               sample_size: int) -> tuple[RoundRecord, np.ndarray]:
        cfg = self.config
        sampled = tuple(int(c) for c in np.sort(rng.choice(len(self.clients), sample_size, replace=False)))
        n_drop = int(round(cfg.dropout * sample_size))
        dropping = rng.choice(sampled, n_drop, replace=False) if n_drop else []
        # one uniform draw per dropout whatever the protocol, so every mode samples the same clients
        drop_stage = {int(c): int(rng.random() * self.aggregator.stages) for c in dropping}
        if self.privacy is not None:
            sampled = self.privacy.admit(r, sampled, self.clients)
        if not sampled:
            outcome = RoundOutcome(None, "every sampled client declined: privacy budget", {}, 0.0)
        else:
            ctx = RoundContext.new(r, sampled, params.size, cfg.min_clients)
            seeds = {c: derive_seed(cfg.seed, r, c) for c in sampled}
            try:
                outcome = self.runtime.run_round(ctx, params, self.clients, seeds, drop_stage, self.aggregator)
            except SecAggError as err:  # a runtime's refusal of this one round (too few partners, ...)
                outcome = RoundOutcome(None, abort(ctx, err), {}, 0.0)
        if self.privacy is not None:
            self.privacy.record(r, outcome)  # persisted before anything of this round is released
        server_seconds = outcome.server_seconds
        if outcome.result is not None:
            t0 = time.perf_counter()
            params = optimizer.step(params, outcome.result.mean)
            server_seconds += time.perf_counter() - t0
        loss = accuracy = None
        if self.test_data is not None:
            set_vector(self.model, params)
            loss, accuracy = evaluate(self.model, self.test_data, self.loss_fn)
        reports = list(outcome.clients.values())
        active = [c for c in reports if c.status is not ClientStatus.DROPPED] or reports or [ClientReport(-1)]
        record = RoundRecord(
            round=r,
            status=RoundStatus.OK if outcome.result is not None else RoundStatus.ABORTED,
            accuracy=accuracy,
            loss=loss,
            clients=list(sampled),
            dropped=[c.client for c in reports if c.status is ClientStatus.DROPPED],
            rejected=[c.client for c in reports if c.status is ClientStatus.REJECTED],
            survivors=len(outcome.result.contributors) if outcome.result is not None else 0,
            bytes_up=float(np.mean([c.bytes_up for c in active])),
            bytes_down=float(np.mean([c.bytes_down for c in active])),
            client_seconds=float(np.mean([c.seconds for c in active])),
            server_seconds=server_seconds,
            per_client=[{**{k: v for k, v in asdict(c).items() if k != "events"}, "status": c.status.value,
                         "privacy_events": [e.describe() for e in c.events]} for c in reports],
            privacy_events=[_describe_event(e) for e in outcome.events],
            abort_reason=outcome.abort_reason,
        )
        return record, params


def _describe_event(event: object) -> dict[str, Any]:
    if not isinstance(event, PrivacyEvent):
        raise TypeError(f"aggregator emitted {type(event).__name__}, not a PrivacyEvent")
    return event.describe()


def record_from_dict(d: dict[str, Any]) -> RoundRecord:
    return RoundRecord(**{**d, "status": RoundStatus(d["status"])})
