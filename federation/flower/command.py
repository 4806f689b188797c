"""``secagg run --runtime flower``: the same job as a Flower App, on local processes or a remote SuperLink."""

from __future__ import annotations

import argparse
import json
import sys

from federation.errors import ConfigError
from federation.experiment_config import ExperimentConfig
from federation.modes import SecureMode
from federation.records import record_from_dict
from federation.report import plot_history, summary_table


def flower_command(args: argparse.Namespace, config: ExperimentConfig) -> int:
    """``secagg run --runtime flower``: the same job as a Flower App, on local processes or a remote SuperLink.
    The job travels as ``config`` (JSON), with ``--app MODULE`` (the user's own model and data) if given.
    ``--resume`` continues the run checkpointed in ``--out`` (its settings already taken by the CLI) on new
    processes: a run whose SuperLink or ServerApp died."""
    from federation.flower.job import FlowerJob, nodes_needed
    from federation.flower.launcher import LocalFlower, SuperLinkAddress, client_nodes, submit

    if args.root_certificates is not None and not args.root_certificates.is_file():
        raise ConfigError(f"--root-certificates {args.root_certificates}: no such file")
    out = args.out.resolve()
    job = FlowerJob(config, out, app=args.app, stage_timeout=args.stage_timeout, resume=args.resume)
    if job.app is not None and args.superlink is None:  # local nodes import it from this environment
        from federation.flower.userapp import load_app

        load_app(job.app)
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
        accuracy = "" if history[-1].accuracy is None else f"final accuracy {history[-1].accuracy:.4f} "
        print(f"\n{accuracy}after {len(history)} rounds on Flower; results in {out}")
    return 0
