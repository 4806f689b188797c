"""The public entry point and its round loop: your model, clients and training function, ``secure=`` and ``dp=``.

``Federation(model, secure=Masking() | CKKS() | None, dp=DPSGD(...) | CentralDP(...) | DistributedDP(...) | None,
rounds=..., ...)``, then ``add_client(loader, optimizer, train_fn)`` per client and ``run()``, which returns a
:class:`~federation.records.History`. What depends on the clients (weight bound, ring, thresholds, noise
multiplier) is derived from the registered clients by :mod:`federation.protection` when ``run()`` starts,
and refused there, before any training. The loop knows only the :class:`~secagg.aggregation.Aggregator`
interface and a runtime, so the protection modes are interchangeable, and so are the runtimes.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dp.clipping import ClientLevelDPAggregator
from federation import checkpoint, protection
from federation.client import FederatedClient, RemoteClient, TrainFn, train_epoch
from federation.config import ClientSampling, FederationConfig, Privacy, Protection, to_dict
from federation.errors import CheckpointError, ConfigError, OutOfMemory, available_memory
from federation.params import dimension, get_vector, set_vector
from federation.privacy import PrivacyBook
from federation.records import RUN_FILES, History, RoundRecord, RoundStatus, record_from_dict, round_record
from federation.runtime import InProcessRuntime, RoundOutcome, Runtime, abort
from federation.strategy import ServerOptimizer
from federation.threads import check_threads
from secagg.aggregation import Aggregator, RoundContext
from secagg.errors import SecAggError
from secagg.primitives.noise import secure_uniform

log = logging.getLogger(__name__)


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

    ``model`` holds the global model (and is left holding the final one). ``secure``: the protection mode
    (:class:`~federation.config.Masking`, :class:`~federation.config.CKKS`, or None for plaintext); ``dp``: the
    privacy mode (:class:`~federation.config.DPSGD`, :class:`~federation.config.CentralDP`,
    :class:`~federation.config.DistributedDP`, or None). With ``checkpoint_dir`` the server state (and the
    privacy ledger) is saved atomically after each round and ``run(resume=True)`` continues from the last
    complete round; a directory holding another run's files is refused unless ``overwrite``.
    ``keep_optimizer_state``: keep each client's optimizer state across rounds (default: a fresh one per round).
    ``preprocessing``: what the inputs went through, saved beside the model by :meth:`save_model`.
    ``aggregator``: an explicit protocol object instead of ``secure`` (tests, runtimes); ``description``: the
    settings results.json records (default: this federation's). ``threads``: torch's threads while the
    simulated clients train (:mod:`federation.threads`; default: 1 for models under 1e6 parameters).
    """

    def __init__(self, model: nn.Module, *, secure: Protection = None, dp: Privacy = None,
                 test_data: Dataset | None = None, loss_fn: nn.Module | None = None,
                 checkpoint_dir: Path | str | None = None, overwrite: bool = False,
                 keep_optimizer_state: bool = False, preprocessing: dict[str, Any] | None = None,
                 config: FederationConfig | None = None, aggregator: Aggregator | None = None,
                 runtime: Runtime | None = None, threads: int | None = None,
                 run_info: dict[str, Any] | None = None, description: dict[str, Any] | None = None,
                 parties: protection.RemoteParties | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise ConfigError("pass either config or individual settings, not both")
        if aggregator is not None and secure is not None:
            raise ConfigError("pass either secure= or an explicit aggregator=, not both")
        self.config = config or FederationConfig(**settings)
        self.model, self.secure, self.dp = model, secure, dp
        self.test_data = test_data
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.overwrite, self.keep_optimizer_state = overwrite, keep_optimizer_state
        self.preprocessing = dict(preprocessing or {})
        self.run_info = run_info or {}
        if runtime is not None and threads is not None:
            raise ConfigError("threads= sets the in-process runtime's threads: pass either runtime= or threads=")
        self.runtime: Runtime = runtime or InProcessRuntime(check_threads(threads))
        self._explicit, self.parties = aggregator, parties
        self.aggregator: Aggregator | None = None  # the stack, made when run() starts
        self.privacy: PrivacyBook | None = None
        self.noise_multiplier: float | None = None
        self.clients: dict[int, Any] = {}  # what the runtime reaches each client by
        self._examples: dict[int, int] = {}
        self.run_id = uuid.uuid4().hex
        self.history = History(config=description if description is not None else self.describe(),
                               run_id=self.run_id)
        self._stopping = False

    def add_client(self, loader: DataLoader, optimizer: torch.optim.Optimizer, train_fn: TrainFn = train_epoch,
                   model: nn.Module | None = None) -> int:
        """Register a client's data, optimizer and training function ``train_fn(model, loader, optimizer)``
        (called once per local epoch; see :mod:`federation.client`); returns its id. ``model`` defaults to the
        global one (clients may share it: they train one after another)."""
        if self.aggregator is not None:
            raise ConfigError("clients are registered before run()")
        client_id = len(self.clients)
        client = FederatedClient(model if model is not None else self.model, optimizer, loader, train_fn,
                                 local_epochs=self.config.local_epochs,
                                 proximal_mu=self.config.strategy.client_proximal_mu,
                                 keep_optimizer_state=self.keep_optimizer_state)
        self.clients[client_id] = client
        self._examples[client_id] = client.num_examples
        return client_id

    def add_remote_client(self, address: Any, examples: int = 1, batches: int = 1) -> int:
        """Register a client that runs elsewhere (:class:`~federation.client.RemoteClient`): ``address`` is
        what the runtime reaches it by, ``examples`` and ``batches`` (per local epoch) what it reported; under
        DP-SGD the server accounts its training from these."""
        if self.aggregator is not None:
            raise ConfigError("clients are registered before run()")
        client_id = len(self.clients)
        self.clients[client_id] = RemoteClient(address, examples, batches, self.config.local_epochs)
        self._examples[client_id] = examples
        return client_id

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings: the round loop's, the protection and privacy modes'."""
        return {"federation": self.config.describe(), "secure": to_dict(self.secure), "dp": to_dict(self.dp),
                "keep_optimizer_state": self.keep_optimizer_state, **self.run_info}

    def population(self) -> protection.Population:
        """The registered clients, as the aggregator stack depends on them."""
        if not self.clients:
            raise ConfigError("no clients: call add_client first")
        cfg = self.config
        batches = tuple(len(c.loader) if isinstance(c, FederatedClient) else c.batches for c in self.clients.values())
        return protection.Population(tuple(self._examples.values()), batches, cfg.sample_size(len(self.clients)),
                                     cfg.min_clients, cfg.rounds, cfg.local_epochs,
                                     cfg.sampling_rate(len(self.clients)))

    def prepare(self) -> None:
        """Derive and check everything that depends on the clients, and build the aggregator stack; ``run()``
        calls it first. Every refusal is a :class:`ConfigError` (or a DP error) before anyone trains."""
        if self.aggregator is not None:
            return
        population = self.population()
        if population.per_round < self.config.min_clients:
            raise ConfigError(f"{population.per_round} clients per round cannot meet "
                              f"min_clients={self.config.min_clients}")
        if self._explicit is not None:
            protection.check_explicit(self._explicit, self.dp, population)
        stack = protection.build(self.secure, self.dp, population, self._explicit, parties=self.parties)
        if stack.dp_sgd is not None:
            for client in self.clients.values():
                if isinstance(client, RemoteClient):
                    client.dp_sgd = stack.dp_sgd  # it trains with it, sent at enrolment
                else:
                    client.enable_dp_sgd(stack.dp_sgd)
        if self.dp is not None:
            from dp.ledger import PrivacyLedger

            self.privacy = PrivacyBook(PrivacyLedger(self.dp.delta, self.dp.max_epsilon), self.checkpoint_dir,
                                       stack.planned_population)
            self.history.ledger, self.history.declined = self.privacy.ledger, self.privacy.declined
        self.aggregator, self.noise_multiplier = stack.aggregator, stack.noise_multiplier

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint: everything but the number of rounds."""
        cfg = self.config.describe()
        cfg.pop("rounds")
        return {"federation": cfg, "clients": len(self.clients), "dimension": dimension(self.model),
                "aggregator": type(self.aggregator).__name__, "secure": to_dict(self.secure), "dp": to_dict(self.dp),
                "noise_multiplier": self.noise_multiplier, **self.run_info}

    def stop(self) -> None:
        """End the run after the current round (call it from ``on_round``: early stopping)."""
        self._stopping = True

    def run(self, *, resume: bool = False, on_round: Callable[[RoundRecord], None] | None = None) -> History:
        """Train for the configured rounds; returns the :class:`History` of every round (resumed ones included).

        ``on_round(record)`` is called after every round, once its checkpoint is written: log metrics, step a
        learning-rate scheduler on your optimizer, or call :meth:`stop` to end early.
        """
        self.prepare()
        assert self.aggregator is not None
        cfg = self.config
        sample_size = cfg.sample_size(len(self.clients))
        params = get_vector(self.model)
        optimizer = ServerOptimizer(cfg.strategy, params.size)
        rng = np.random.default_rng(cfg.seed)  # client sampling and simulated dropouts: not secrets
        done = 0
        if resume:
            done, params = self._restore(optimizer, rng)
            if self.privacy is not None:
                self.privacy.resume(self.history)
                self.history.ledger = self.privacy.ledger
        elif self.checkpoint_dir is not None and not self.history:
            self._claim(self.checkpoint_dir)
        started = time.perf_counter() - self.history.wall_seconds
        self._stopping = False
        for r in range(done + 1, cfg.rounds + 1):
            if self.privacy is not None and not self.privacy.population_allows_another_round():
                break
            record, params = self._round(r, params, optimizer, rng, sample_size)
            self.history.append(record)
            self.history.wall_seconds = time.perf_counter() - started
            set_vector(self.model, params)
            if self.checkpoint_dir is not None:
                checkpoint.save(self.checkpoint_dir, checkpoint.ServerState(
                    r, params, optimizer.state, rng.bit_generator.state,
                    [h.to_dict() for h in self.history], self.fingerprint(), self.run_id))
            if on_round is not None:
                on_round(record)
            if self._stopping:
                break
        set_vector(self.model, params)
        return self.history

    def save(self, directory: Path | str, *, overwrite: bool = False) -> Path:
        """Write results.json, ledger.json (with DP), metrics.png and model.npz (the final ``state_dict`` with
        its preprocessing) into ``directory``; ``secagg audit DIR`` reads them. Another run's files there are
        refused unless ``overwrite``."""
        from federation.model_io import MODEL_NAME

        directory = self.history.save(directory, overwrite=overwrite)
        self.save_model(directory / MODEL_NAME)
        return directory

    def save_model(self, path: Path | str) -> Path:
        """The global model's ``state_dict`` and preprocessing (load with :func:`federation.load_model`)."""
        from federation.model_io import save_model

        return save_model(self.model, path, self.preprocessing)

    def _claim(self, directory: Path, resuming: bool = False) -> None:
        """A fresh run into ``directory``: refused if another run's files are there, unless ``overwrite``
        (then they are removed first, so no stale ledger is ever continued). ``resuming`` a run that stopped in
        its first round: only its in-flight record may be there (it is charged, see :class:`PrivacyBook`)."""
        from federation.records import IN_FLIGHT_NAME, refuse_other_run

        if not self.overwrite:
            refuse_other_run(directory, None, ignore=(IN_FLIGHT_NAME,) if resuming else ())
            return
        for name in RUN_FILES:
            with checkpoint.writing(directory / name):
                (directory / name).unlink(missing_ok=True)

    def _restore(self, optimizer: ServerOptimizer, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        if self.checkpoint_dir is None:
            raise ConfigError("resume needs a checkpoint directory")
        try:
            state = checkpoint.load(self.checkpoint_dir)
        except CheckpointError:
            if not (self.checkpoint_dir / checkpoint.CHECKPOINT_NAME).exists():
                log.info("no checkpoint in %s: starting from round 1", self.checkpoint_dir)
                self._claim(self.checkpoint_dir, resuming=True)
                return 0, get_vector(self.model)
            raise
        if state.config != self.fingerprint():
            stored_z, z = state.config.get("noise_multiplier"), self.noise_multiplier
            if stored_z is not None and z is not None and stored_z != z and getattr(self.dp, "target_epsilon", None):
                raise CheckpointError(
                    f"the checkpoint's rounds ran at noise multiplier {stored_z:.6g}, calibrated to the target "
                    f"epsilon for its number of rounds; {self.config.rounds} rounds would need {z:.6g}, and the "
                    f"rounds already run cannot be re-noised. To extend the run, give noise_multiplier={stored_z:.6g} "
                    "(--noise-multiplier) and, to bound it, max_epsilon (--max-epsilon)")
            raise CheckpointError("checkpoint belongs to a different configuration (only --rounds may change)")
        if state.round > self.config.rounds:
            raise CheckpointError(f"checkpoint is at round {state.round}, past the {self.config.rounds} asked for")
        optimizer.load_state(state.optimizer_state)
        rng.bit_generator.state = state.rng_state
        if state.run_id:
            self.run_id = self.history.run_id = state.run_id
        self.history[:] = [record_from_dict(h) for h in state.history]
        set_vector(self.model, state.params)
        return state.round, state.params

    def _round(self, r: int, params: np.ndarray, optimizer: ServerOptimizer, rng: np.random.Generator,
               sample_size: int) -> tuple[RoundRecord, np.ndarray]:
        cfg, aggregator = self.config, self.aggregator
        assert aggregator is not None
        eligible: tuple[int, ...] | None = None  # Poisson: who could have been drawn, and so is charged
        if cfg.client_sampling is ClientSampling.POISSON:
            eligible = tuple(self.clients)
            if self.privacy is not None:
                eligible = self.privacy.admit(r, eligible, self.clients)
            q = sample_size / len(self.clients)
            coins = secure_uniform(len(eligible)) if eligible else np.ones(0)
            sampled = tuple(c for c, u in zip(eligible, coins) if u < q)
        else:
            sampled = tuple(int(c) for c in np.sort(rng.choice(len(self.clients), sample_size, replace=False)))
        n_drop = int(round(cfg.dropout * len(sampled)))
        dropping = rng.choice(sampled, n_drop, replace=False) if n_drop else []
        # one uniform draw per dropout whatever the protocol, so every mode samples the same clients
        drop_stage = {int(c): int(rng.random() * aggregator.stages) for c in dropping}
        if self.privacy is not None and eligible is None:
            sampled = self.privacy.admit(r, sampled, self.clients)
        if not sampled:
            why = "no client drawn" if eligible else "every sampled client declined: privacy budget"
            outcome = RoundOutcome(None, why, {}, 0.0)
        else:
            ctx = RoundContext.new(r, sampled, params.size, cfg.min_clients)
            seeds = {c: derive_seed(cfg.seed, r, c) for c in sampled}
            if self.privacy is not None:  # what the round may spend, on disk before anything is sent
                self.privacy.begin(r, sampled, self.clients, eligible)
            try:
                outcome = self.runtime.run_round(ctx, params, self.clients, seeds, drop_stage, aggregator)
            except MemoryError as err:  # the process, not a party: the run stops, saying what did not fit
                raise OutOfMemory(out_of_memory(ctx, err)) from None
            except SecAggError as err:  # a runtime's refusal of this one round (too few partners, ...)
                outcome = RoundOutcome(None, abort(ctx, err), {}, 0.0)
        if eligible is not None and outcome.result is None and isinstance(aggregator, ClientLevelDPAggregator):
            # Poisson: a round without contributions still releases the noise, so its emptiness never shows
            outcome = replace(outcome, result=aggregator.noise_only(params.size))
            outcome.events = list(outcome.result.events)
        if self.privacy is not None:
            self.privacy.record(r, outcome, eligible)  # persisted before anything of this round is released
        server_seconds = outcome.server_seconds
        if outcome.result is not None:
            t0 = time.perf_counter()
            params = optimizer.step(params, outcome.result.mean)
            server_seconds += time.perf_counter() - t0
        loss = accuracy = None
        if self.test_data is not None:
            set_vector(self.model, params)
            loss, accuracy = evaluate(self.model, self.test_data, self.loss_fn)
        charged = len(eligible) if eligible is not None else None
        return round_record(r, sampled, outcome, server_seconds, accuracy, loss, charged), params


def out_of_memory(ctx: RoundContext, err: MemoryError) -> str:
    """Why round ``ctx`` stopped the run: what failed to fit, and the sizes the round works with."""
    what = str(err) or "an allocation failed"
    return (f"round {ctx.round} ran out of memory ({what}) with {len(ctx.clients)} clients x {ctx.dimension:,} "
            f"parameters ({4 * ctx.dimension:,} bytes per float32 update; {available_memory()}); the last checkpoint "
            f"holds the previous round")


__all__ = ["Federation", "FederationConfig", "RoundRecord", "RoundStatus", "derive_seed", "evaluate"]
