"""``secagg run``'s options beyond their types: which ones were given on the command line, which ones need
``--dp`` or ``--secure mask``, whether ``--out`` may be written, and what ``--resume`` takes from the stored
run (every setting but ``--rounds``). Everything here runs before any data is loaded or model trained."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from federation.errors import ConfigError
from federation.modes import DPMode, RuntimeName, SecureMode
from federation.records import RESULTS_NAME, RUN_FILES

if TYPE_CHECKING:
    from federation.experiment_config import ExperimentConfig

DP_OPTIONS = ("noise_multiplier", "target_epsilon", "clip", "adaptive_clip", "clip_lr", "count_noise", "delta",
              "max_epsilon", "secure_mode")
MASK_OPTIONS = ("neighbors", "threshold", "consistency_check", "precision_bits")
ENCODING_OPTIONS = ("encode_clip",)  # --secure mask or ckks
COUNT_OR_FRACTION = ("clients_per_round", "threshold")  # 1 (a count) and 1.0 (a fraction) differ
MAY_CHANGE_ON_RESUME = ("rounds",)
DEPLOYMENT_OPTIONS = ("runtime", "app")  # where the run ran: in results.json beside its settings


def explicit_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the options ``argv`` gives explicitly (a value equal to the default included):
    ``argv`` parsed again by ``parser`` (a fresh one: it is changed) with every default suppressed."""
    for action in _run_parser(parser)._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


def _run_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["run"]


def flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each ``run`` option's destination and its long flag (``noise_multiplier`` -> ``--noise-multiplier``)."""
    return {a.dest: a.option_strings[-1] for a in _run_parser(parser)._actions if a.option_strings}


def check_requirements(args: argparse.Namespace, explicit: set[str], flag: dict[str, str]) -> None:
    """Refuse DP options without ``--dp``, masking options without ``--secure mask`` and ``--encode-clip``
    without ``--secure mask|ckks``: an option that would silently do nothing."""
    secure, dp = SecureMode(args.secure), DPMode(args.dp)
    unused = []
    if dp is DPMode.NONE:
        unused += [(o, "--dp local|central|distributed") for o in DP_OPTIONS if o in explicit]
    if secure is not SecureMode.MASK:
        unused += [(o, "--secure mask") for o in MASK_OPTIONS if o in explicit]
    if secure is SecureMode.NONE:
        unused += [(o, "--secure mask|ckks") for o in ENCODING_OPTIONS if o in explicit]
    if unused:
        raise ConfigError("; ".join(f"{flag[o]} applies only with {needs}" for o, needs in unused))


def claim_output(out: Path, *, resume: bool, overwrite: bool) -> None:
    """A fresh run never replaces another run's results or privacy ledger unless ``--overwrite``."""
    if resume and overwrite:
        raise ConfigError("give --resume (continue the run in --out) or --overwrite (replace it), not both")
    if resume or overwrite:
        return
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present:
        raise ConfigError(f"{out} holds another run's {', '.join(present)}: pass --resume to continue it, "
                          "--overwrite to replace it, or choose another --out")


def stored_options(out: Path) -> dict[str, Any] | None:
    """The options of the run stored in ``out`` (from its results.json, else its checkpoint, which lacks
    ``rounds``, ``runtime`` and ``app``), as ``secagg run`` parses them; ``None`` when ``out`` holds no run."""
    from federation.experiment_config import ExperimentConfig

    stored = _stored_run(out)
    if stored is None:
        return None
    settings, deployment = stored
    try:
        config = ExperimentConfig.from_dict(settings)
    except ConfigError as err:
        raise ConfigError(f"cannot resume {out}: its stored configuration is not a secagg run's ({err})") from None
    options = config_options(config)
    if "rounds" not in settings:
        options.pop("rounds")
    return {**options, **deployment}


def _stored_config(out: Path) -> dict[str, Any] | None:
    """The stored run's settings (:meth:`ExperimentConfig.to_dict`'s keys); None when ``out`` holds no run."""
    stored = _stored_run(out)
    return None if stored is None else stored[0]


def _stored_run(out: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The stored run's settings and where it ran: from results.json, its ``runtime`` and ``app`` (the Flower
    ServerApp adds them to the settings; an in-process run names neither: in process, no app), else from
    the checkpoint (settings only); None when ``out`` holds no run."""
    try:
        document = json.loads((out / RESULTS_NAME).read_text())["config"]
        if not isinstance(document, dict):
            raise TypeError(f"its config is {type(document).__name__}, not an object")
        settings = {k: v for k, v in document.items() if k not in DEPLOYMENT_OPTIONS}
        return settings, {"runtime": document.get("runtime", RuntimeName.IN_PROCESS.value),
                          "app": document.get("app")}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"cannot resume {out}: unreadable {RESULTS_NAME} ({err})") from None
    from federation import checkpoint
    from federation.errors import CheckpointError

    try:
        state = checkpoint.load(out)
    except CheckpointError:
        return None
    settings = state.config.get("experiment") if isinstance(state.config, dict) else None
    return None if settings is None else (settings, {})


def config_options(config: ExperimentConfig) -> dict[str, Any]:
    """``config`` as the ``run`` options that make it (the inverse of the CLI's ``config_from_args``); the
    masking and DP options only where the mode uses them."""
    c = config
    options: dict[str, Any] = dict(
        dataset=c.dataset.value, clients=c.clients, clients_per_round=c.clients_per_round, rounds=c.rounds,
        local_epochs=c.local_epochs, batch_size=c.batch_size, lr=c.lr, partition=c.partition.value, alpha=c.alpha,
        strategy=c.strategy.name.value, server_lr=c.strategy.server_lr, mu=c.strategy.proximal_mu,
        secure=c.secure.value, dp=c.dp.value, dropout=c.dropout, min_clients=c.min_clients, seed=c.seed,
        client_sampling=c.client_sampling.value)
    if c.secure is SecureMode.MASK:
        m = c.masking
        options.update(neighbors=m.neighbors, threshold=m.threshold, consistency_check=m.consistency_check,
                       precision_bits=m.precision_bits)
    if c.secure is not SecureMode.NONE:
        options["encode_clip"] = c.masking.clip
    if c.privacy is not None:
        p = c.privacy
        options.update(noise_multiplier=p.noise_multiplier, target_epsilon=p.target_epsilon, clip=p.clip,
                       adaptive_clip=p.adaptive_quantile, clip_lr=p.clip_learning_rate, count_noise=p.count_noise,
                       delta=p.delta, max_epsilon=p.max_epsilon, secure_mode=p.secure_mode)
    return options


def resume_options(args: argparse.Namespace, explicit: set[str], stored: dict[str, Any],
                   flag: dict[str, str]) -> None:
    """Take the stored run's options into ``args``; an explicit one that differs is refused (all of them
    named, with both values), except ``--rounds``, which may extend the run."""
    differing = []
    for dest, old in stored.items():
        if dest not in explicit or dest in MAY_CHANGE_ON_RESUME:
            continue
        new = getattr(args, dest)
        if new != old or (dest in COUNT_OR_FRACTION and type(new) is not type(old)):
            differing.append(f"{flag[dest]} {_shown(new)} differs from the stored run's {_shown(old)}")
    if differing:
        raise ConfigError("--resume continues the stored run with its own settings (only --rounds may change): "
                          + "; ".join(differing))
    for dest, value in stored.items():
        if dest not in explicit:
            setattr(args, dest, value)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "(default)" if value is None else str(value)
