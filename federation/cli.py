"""The ``secagg`` command line: ``secagg run`` trains a federated model and writes its results."""

from __future__ import annotations

import argparse
import enum
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from dp.errors import DPError
from federation.data import DatasetName
from federation.errors import FederationError
from federation.experiment import DPMode, ExperimentConfig, SecureMode, build_federation
from federation.partition import PartitionScheme
from federation.report import plot_history, results_document, summary_table, write_results
from federation.server import RoundRecord
from federation.strategy import Strategy, StrategyName
from secagg.errors import SecAggError

log = logging.getLogger("secagg")


def _choices(kind: type[enum.Enum]) -> list[str]:
    return [m.value for m in kind]


def _clients_per_round(text: str) -> int | float:
    """An integer count, or a fraction written with a decimal point (``0.5``)."""
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="secagg", description="Privacy-preserving federated learning.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train a federated model in-process",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = ExperimentConfig()
    run.add_argument("--dataset", choices=_choices(DatasetName), default=d.dataset.value)
    run.add_argument("--clients", type=int, default=d.clients, help="number of clients")
    run.add_argument("--clients-per-round", type=_clients_per_round, default=None,
                     help="count (e.g. 5) or fraction (e.g. 0.5) sampled each round; default all")
    run.add_argument("--rounds", type=int, default=d.rounds)
    run.add_argument("--local-epochs", type=int, default=d.local_epochs)
    run.add_argument("--batch-size", type=int, default=d.batch_size)
    run.add_argument("--lr", type=float, default=d.lr, help="client learning rate (SGD)")
    run.add_argument("--partition", choices=_choices(PartitionScheme), default=d.partition.value)
    run.add_argument("--alpha", type=float, default=d.alpha, help="Dirichlet concentration (label or quantity skew)")
    run.add_argument("--strategy", choices=_choices(StrategyName), default=StrategyName.FEDAVG.value)
    run.add_argument("--server-lr", type=float, default=None, help="server learning rate; default per strategy")
    run.add_argument("--mu", type=float, default=Strategy().proximal_mu, help="FedProx proximal term")
    run.add_argument("--secure", choices=_choices(SecureMode), default=SecureMode.NONE.value)
    run.add_argument("--dp", choices=_choices(DPMode), default=DPMode.NONE.value)
    run.add_argument("--dropout", type=float, default=d.dropout, help="fraction of sampled clients dropping per round")
    run.add_argument("--min-clients", type=int, default=d.min_clients, help="fewest contributions to release a round")
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument("--out", type=Path, default=Path("runs/latest"), help="output directory")
    run.add_argument("--resume", action="store_true", help="continue from the last complete round in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bar or table")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    strategy = Strategy(StrategyName(args.strategy), server_lr=args.server_lr, proximal_mu=args.mu)
    return ExperimentConfig(
        dataset=DatasetName(args.dataset), clients=args.clients, clients_per_round=args.clients_per_round,
        rounds=args.rounds, local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr,
        partition=PartitionScheme(args.partition), alpha=args.alpha, strategy=strategy,
        secure=SecureMode(args.secure), dp=DPMode(args.dp), dropout=args.dropout, min_clients=args.min_clients,
        seed=args.seed)


def run_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    config = config_from_args(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    federation = build_federation(config, checkpoint_dir=out)
    started = time.perf_counter()
    bar = tqdm(total=config.rounds, desc="rounds", unit="round", disable=args.quiet, file=sys.stderr)

    def on_round(record: RoundRecord) -> None:
        bar.n = record.round
        acc = "-" if record.accuracy is None else f"{record.accuracy:.4f}"
        bar.set_postfix(acc=acc, dropped=len(record.dropped), refresh=False)
        bar.refresh()
        write_results(out, results_document(config.describe(), federation.history, time.perf_counter() - started))

    try:
        history = federation.run(resume=args.resume, on_round=on_round)
    finally:
        bar.close()
    write_results(out, results_document(config.describe(), history, time.perf_counter() - started))
    plot_history(out, history)
    if not args.quiet:
        print(summary_table(history))
        last = history[-1]
        print(f"\nfinal accuracy {last.accuracy:.4f}, loss {last.loss:.4f} after {len(history)} rounds; "
              f"results in {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (FederationError, SecAggError, DPError) as err:
        print(f"secagg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("secagg: interrupted; the checkpoint holds the last complete round (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
