"""The run configuration a Flower run carries: the same ``secagg run`` options on every node."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context

from federation.errors import ConfigError
from federation.experiment import ExperimentConfig, SecureMode

KEY_HOLDER_ROLE = "key-holder"


@dataclass(frozen=True)
class FlowerJob:
    """``argv``: the ``secagg run`` options; ``out``: where the ServerApp writes results (on the SuperLink's
    machine); ``stage_timeout``: seconds the server waits for a stage's answers before counting the silent
    clients as dropped; ``connect_timeout``: seconds it waits for every SuperNode to connect."""

    argv: tuple[str, ...]
    out: Path
    stage_timeout: float = 120.0
    connect_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in ("stage_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be positive seconds, got {getattr(self, name)}")

    @classmethod
    def from_context(cls, context: Context) -> FlowerJob:
        rc = context.run_config
        try:
            argv = json.loads(str(rc["argv"]))
            return cls(tuple(str(a) for a in argv), Path(str(rc["out"])), float(rc["stage-timeout"]),
                       float(rc["connect-timeout"]))
        except (KeyError, ValueError, TypeError) as err:
            raise ConfigError(f"bad run configuration: {err}") from None

    def run_config(self) -> dict[str, str | float]:
        return {"argv": json.dumps(list(self.argv)), "out": str(self.out), "stage-timeout": self.stage_timeout,
                "connect-timeout": self.connect_timeout}

    def experiment(self) -> ExperimentConfig:
        from federation.cli import build_parser, config_from_args

        config = config_from_args(build_parser().parse_args(["run", *self.argv]))
        check_supported(config)
        return config


def check_supported(config: ExperimentConfig) -> None:
    """What the Flower runtime does not do (yet): refused before anything starts."""
    if config.privacy is not None:
        raise ConfigError("--runtime flower does not support --dp yet: the privacy ledger needs the clients' "
                          "planned DP-SGD events, which remote clients do not report")
    if config.dropout:
        raise ConfigError("--runtime flower has real dropouts only: --dropout simulates them in-process")


def nodes_needed(config: ExperimentConfig) -> int:
    """SuperNodes a run needs: one per client, plus the CKKS key holder."""
    return config.clients + (1 if config.secure is SecureMode.CKKS else 0)
