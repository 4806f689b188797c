"""The run configuration a Flower run carries: the job's settings as JSON, the same on every node.

``config`` is :meth:`ExperimentConfig.to_dict` as JSON; ``app`` names the module with the user's own model,
data and training function (see :mod:`federation.flower.userapp`; empty: the built-in job); ``out``,
``stage-timeout`` and ``connect-timeout`` are the runtime's own settings; ``resume`` continues the run whose
checkpoint is in ``out`` (a new deployment may continue a run whose SuperLink or ServerApp died).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context

from federation.errors import ConfigError
from federation.experiment_config import ExperimentConfig
from federation.modes import SecureMode

KEY_HOLDER_ROLE = "key-holder"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class FlowerJob:
    """``config``: the job's settings; ``out``: where the ServerApp writes results (on the SuperLink's
    machine); ``app``: the module path of the user's app (None: the built-in job); ``stage_timeout``: seconds
    the server waits for a stage's answers before counting the silent clients as dropped;
    ``connect_timeout``: seconds it waits for every SuperNode to connect; ``resume``: continue from the
    checkpoint in ``out`` (``Federation.run(resume=True)``: same settings but the rounds, else refused)."""

    config: ExperimentConfig
    out: Path
    app: str | None = None
    stage_timeout: float = 120.0
    connect_timeout: float = 120.0
    resume: bool = False

    def __post_init__(self) -> None:
        for name in ("stage_timeout", "connect_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be positive seconds, got {getattr(self, name)}")
        if self.app is not None and not _MODULE.fullmatch(self.app):
            raise ConfigError(f"app {self.app!r} is not a module path (like mypackage.fedjob)")
        check_supported(self.config)

    @classmethod
    def from_context(cls, context: Context) -> FlowerJob:
        """The job a Flower run carries; the configuration is parsed once per JSON text, not per message."""
        rc = context.run_config
        try:
            config, app, resume = str(rc["config"]), str(rc.get("app", "")), rc.get("resume", False)
            if not isinstance(resume, bool):
                raise TypeError(f"resume must be true or false, got {resume!r}")
            return cls(parse_config(config), Path(str(rc["out"])), app or None, float(rc["stage-timeout"]),
                       float(rc["connect-timeout"]), resume)
        except (KeyError, ValueError, TypeError) as err:
            raise ConfigError(f"bad run configuration: {err}") from None

    def run_config(self) -> dict[str, str | float | bool]:
        """What ``flwr run --run-config`` carries (flat strings, numbers and booleans)."""
        return {"config": json.dumps(self.config.to_dict(), sort_keys=True), "app": self.app or "",
                "out": str(self.out), "stage-timeout": self.stage_timeout, "connect-timeout": self.connect_timeout,
                "resume": self.resume}


@functools.lru_cache(maxsize=8)
def parse_config(text: str) -> ExperimentConfig:
    """The configuration a run's JSON holds; :class:`ConfigError` if it is not JSON or not a configuration."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"the run configuration is not JSON: {err}") from None
    return ExperimentConfig.from_dict(document)


def check_supported(config: ExperimentConfig) -> None:
    """What the Flower runtime does not do (yet): refused before anything starts."""
    if config.dropout:
        raise ConfigError("--runtime flower has real dropouts only: --dropout simulates them in-process")


def nodes_needed(config: ExperimentConfig) -> int:
    """SuperNodes a run needs: one per client, plus the CKKS key holder."""
    return config.clients + (1 if config.secure is SecureMode.CKKS else 0)
