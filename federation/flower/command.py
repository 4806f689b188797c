"""``secagg run --runtime flower``: the same job as a Flower App, on local processes or a remote SuperLink."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from federation.experiment import ExperimentConfig
from federation.errors import ConfigError
from federation.experiment import SecureMode
from federation.records import record_from_dict
from federation.report import plot_history, summary_table

_RUNTIME_ONLY = {"--runtime": 1, "--superlink": 1, "--root-certificates": 1, "--stage-timeout": 1, "--resume": 0}


def job_options(argv: Sequence[str]) -> tuple[str, ...]:
    """The job's options from a ``secagg run ...`` command line, without those of the runtime itself."""
    kept, skip = [], 0
    for item in argv[1:]:
        name = item.split("=", 1)[0]
        if skip:
            skip -= 1
        elif name in _RUNTIME_ONLY:
            skip = _RUNTIME_ONLY[name] if "=" not in item else 0
        else:
            kept.append(item)
    return tuple(kept)


def flower_command(args: argparse.Namespace, config: ExperimentConfig, argv: Sequence[str]) -> int:
    """``secagg run --runtime flower``: the same job as a Flower App, on local processes or a remote SuperLink."""
    from federation.flower.job import FlowerJob, check_supported, nodes_needed
    from federation.flower.launcher import LocalFlower, SuperLinkAddress, client_nodes, submit

    check_supported(config)
    if args.resume:
        raise ConfigError("--resume is not supported with --runtime flower")
    if args.root_certificates is not None and not args.root_certificates.is_file():
        raise ConfigError(f"--root-certificates {args.root_certificates}: no such file")
    out = args.out.resolve()
    job = FlowerJob(job_options(argv), out, stage_timeout=args.stage_timeout)
    if args.superlink is not None:
        submit(job, SuperLinkAddress(args.superlink, root_certificates=args.root_certificates),
               out / "flwr-home", timeout=86400)
    else:
        if not args.quiet:
            print(f"starting a SuperLink and {nodes_needed(config)} SuperNodes on 127.0.0.1 (logs in {out})",
                  file=sys.stderr)
        with LocalFlower(out, client_nodes(config.clients, key_holder=config.secure is SecureMode.CKKS)) as flower:
            flower.run(job)
    doc = json.loads((out / "results.json").read_text())
    history = [record_from_dict(r) for r in doc["rounds"]]
    plot_history(out, history)
    if not args.quiet:
        print(summary_table(history))
        print(f"\nfinal accuracy {history[-1].accuracy:.4f} after {len(history)} rounds on Flower; results in {out}")
    return 0
