"""The ``secagg`` command line: ``secagg run`` trains a federated model and writes its results."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from federation.audit_cli import add_parser as add_audit_parser
from federation.bench.modes import BenchMode
from federation.config import ClientSampling, Masking
from federation.errors import ConfigError, FederationError, OutputError, available_memory
from federation.experiment_config import ExperimentConfig, PrivacySettings
from federation.modes import DatasetName, DPMode, PartitionScheme, RuntimeName, SecureMode
from federation.strategy import Strategy, StrategyName

if TYPE_CHECKING:
    from federation.server import RoundRecord

# Only what the parser needs is imported above (no torch, opacus, tenseal, flwr or matplotlib): ``secagg
# --help`` and option errors answer at once; each command imports its own machinery.

log = logging.getLogger("secagg")


def _choices(kind: type[enum.Enum]) -> list[str]:
    return [m.value for m in kind]


def _defaults(cls: type) -> dict[str, Any]:
    """A dataclass's field defaults, without constructing (and so validating, which needs torch) one."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _count_or_fraction(text: str) -> int | float:
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
    d = argparse.Namespace(**_defaults(ExperimentConfig))
    p = argparse.Namespace(**_defaults(PrivacySettings))
    run.add_argument("--dataset", choices=_choices(DatasetName), default=d.dataset.value)
    run.add_argument("--clients", type=int, default=d.clients, help="number of clients")
    run.add_argument("--clients-per-round", type=_count_or_fraction, default=None,
                     help="count (e.g. 5) or fraction (e.g. 0.5) sampled each round; default all")
    run.add_argument("--rounds", type=int, default=d.rounds)
    run.add_argument("--local-epochs", type=int, default=d.local_epochs)
    run.add_argument("--batch-size", type=int, default=d.batch_size)
    run.add_argument("--lr", type=float, default=d.lr, help="client learning rate (SGD)")
    run.add_argument("--partition", choices=_choices(PartitionScheme), default=d.partition.value)
    run.add_argument("--alpha", type=float, default=d.alpha, help="Dirichlet concentration (label or quantity skew)")
    run.add_argument("--strategy", choices=_choices(StrategyName), default=Strategy().name.value)
    run.add_argument("--server-lr", type=float, default=None, help="server learning rate; default per strategy")
    run.add_argument("--mu", type=float, default=Strategy().proximal_mu, help="FedProx proximal term")
    run.add_argument("--secure", choices=_choices(SecureMode), default=SecureMode.NONE.value)
    masking = argparse.Namespace(**_defaults(Masking))  # secagg's MaskingConfig defaults
    run.add_argument("--neighbors", type=int, default=masking.neighbors,
                     help="--secure mask: SecAgg+ graph degree; default ~2 log2(n); 0 = complete graph (SecAgg)")
    run.add_argument("--threshold", type=_count_or_fraction, default=masking.threshold,
                     help="--secure mask: Shamir threshold, a count above half the neighbours or a fraction "
                          "in [0.5, 1] (default 0.5: floor(k/2) + 1)")
    run.add_argument("--consistency-check", action="store_true",
                     help="--secure mask: secure against a server that deviates from the protocol (signed keys, "
                          "commit-reveal graph seed, signed survivor lists; docs/threat-model.md)")
    run.add_argument("--encode-clip", type=float, default=masking.clip,
                     help="--secure mask|ckks: each update coordinate is clipped to [-c, c] before encoding")
    run.add_argument("--precision-bits", type=int, default=masking.precision_bits,
                     help="--secure mask: fixed-point levels per coordinate, as bits")
    run.add_argument("--dp", choices=_choices(DPMode), default=DPMode.NONE.value,
                     help="local: DP-SGD in clients (Opacus); central: server adds noise to the aggregate; "
                          "distributed: clients add noise shares (discrete Gaussian with --secure mask, "
                          "Gaussian with --secure ckks)")
    run.add_argument("--noise-multiplier", type=float, default=None, help="--dp: Gaussian noise multiplier z")
    run.add_argument("--target-epsilon", type=float, default=None,
                     help="--dp: choose z so that the whole run spends this epsilon (RDP) at --delta")
    run.add_argument("--clip", type=float, default=p.clip,
                     help="--dp: per-sample gradient norm (local) or update L2 norm (central, distributed)")
    run.add_argument("--adaptive-clip", type=float, default=None, metavar="QUANTILE",
                     help="--dp central: adapt the update clip (from --clip) toward this quantile of the update "
                          "norms (Andrew et al. 2021)")
    run.add_argument("--clip-lr", type=float, default=p.clip_learning_rate,
                     help="--adaptive-clip: geometric learning rate")
    run.add_argument("--count-noise", type=float, default=None,
                     help="--adaptive-clip: noise std on the count of clients within the clip (default: "
                          "max(z, clients per round / 20); must exceed z / 2)")
    run.add_argument("--delta", type=float, default=p.delta, help="--dp: delta of (epsilon, delta)-DP")
    run.add_argument("--max-epsilon", type=float, default=None,
                     help="--dp: budget: clients decline rounds that would exceed it; the server stops when the "
                          "population's would")
    run.add_argument("--secure-mode", action="store_true",
                     help="--dp local: Opacus's secure noise generation; --dp central: discrete Gaussian noise on a "
                          "grid, immune to floating-point attacks")
    run.add_argument("--client-sampling", choices=_choices(ClientSampling), default=ClientSampling.FIXED_SIZE.value,
                     help="fixed-size: exactly --clients-per-round each round (client-level DP accounted for "
                          "replace-with-zero neighbours, no amplification); poisson: each client joins with "
                          "probability clients-per-round / clients (--dp central amplified, add/remove neighbours)")
    run.add_argument("--dropout", type=float, default=d.dropout, help="fraction of sampled clients dropping per round")
    run.add_argument("--min-clients", type=int, default=d.min_clients, help="fewest contributions to release a round")
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument("--out", type=Path, default=Path("runs/latest"), help="output directory")
    run.add_argument("--resume", action="store_true", help="continue from the last complete round in --out")
    run.add_argument("--overwrite", action="store_true",
                     help="replace another run's results, ledger and checkpoint in --out (refused otherwise)")
    run.add_argument("--quiet", action="store_true", help="no progress bar or table")
    run.add_argument("--threads", type=int, default=None,
                     help="torch threads while the simulated clients train (default: 1 for models under 1e6 "
                          "parameters, else torch's default; docs/benchmarks.md, Threads)")
    run.add_argument("--runtime", choices=_choices(RuntimeName), default=RuntimeName.IN_PROCESS.value,
                     help="in-process simulation, or Flower (a local SuperLink and SuperNodes, or --superlink)")
    run.add_argument("--superlink", default=None,
                     help="--runtime flower: submit to this existing SuperLink (host:port, TLS) instead of "
                          "starting local processes")
    run.add_argument("--root-certificates", type=Path, default=None,
                     help="--superlink: CA certificate (PEM) that signed the SuperLink's TLS certificate")
    run.add_argument("--stage-timeout", type=float, default=120.0,
                     help="--runtime flower: seconds to wait for a stage's answers before counting clients dropped")
    run.add_argument("--app", default=None, metavar="MODULE",
                     help="--runtime flower: module with your own model, data and training function, imported on "
                          "every node (see federation/flower/app_template.py; default: the built-in job)")

    bench = commands.add_parser("bench", help="measure the overhead of each protection mode",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bench.add_argument("--modes", type=_list(BenchMode), default="none,mask")
    bench.add_argument("--params", type=_list(_size), default="1e5", help="update sizes, e.g. 1e5,1e6")
    bench.add_argument("--clients", type=_list(int), default="10,100")
    bench.add_argument("--dropout", type=_list(float), default="0,0.1")
    bench.add_argument("--repeat", type=int, default=3)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", type=Path, default=Path("runs/bench"))
    bench.add_argument("--end-to-end", action="store_true",
                       help="also train the default job in each mode and compare round times and accuracy")
    bench.add_argument("--rounds", type=int, default=20, help="rounds of the --end-to-end job")
    bench.add_argument("--privacy", default=None, metavar="Z,Z,...", type=_list(float),
                       help="instead of the protection modes, the default job's accuracy against epsilon for these "
                            "noise multipliers (DP-SGD and central DP; --rounds, --seed), e.g. 0.5,1,2,4")
    bench.add_argument("--audit", default=None, metavar="CLIENTSxROUNDS",
                       help="instead of the protection modes, time auditing a synthetic ledger, e.g. 1000x1000")
    bench.add_argument("--memory", action="store_true",
                       help="instead of timing rounds, measure the server's peak memory and seconds for one round "
                            "per --modes x --params x --clients, the server in a process of its own (memory.png)")
    bench.add_argument("--threads", default=None, metavar="N,N,...", type=_list(int),
                       help="instead of the protection modes, time the default job (and a 1.2M-parameter MLP) "
                            "with each torch thread count, interleaved over 3 sittings; --rounds rounds each")
    bench.add_argument("--flower", nargs="?", const="3x2", default=None, metavar="CLIENTSxROUNDS",
                       help="instead of the protection modes, time rounds on a local Flower deployment: the minimal "
                            "Flower FedAvg app against ours (none, mask, ckks), e.g. 3x2 (the default)")
    bench.add_argument("--quiet", action="store_true")
    add_audit_parser(commands)
    return parser


def _size(text: str) -> int:
    value = float(text)
    if value != int(value):
        raise ValueError(text)
    return int(value)


def _list(parse):
    """A comma-separated list of values for ``parse`` (an enum or a converter)."""

    def convert(text: str) -> list:
        try:
            return [parse(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid list {text!r}") from None

    return convert


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The job ``secagg run``'s parsed options describe (validated: refused settings raise ConfigError)."""
    from secagg.masking import MaskingConfig

    strategy = Strategy(StrategyName(args.strategy), server_lr=args.server_lr, proximal_mu=args.mu)
    privacy = None
    if DPMode(args.dp) is not DPMode.NONE:
        privacy = PrivacySettings(args.noise_multiplier, args.target_epsilon, args.clip, args.delta,
                                  args.max_epsilon, args.secure_mode, args.adaptive_clip, args.clip_lr,
                                  args.count_noise)
    return ExperimentConfig(
        dataset=DatasetName(args.dataset), clients=args.clients, clients_per_round=args.clients_per_round,
        rounds=args.rounds, local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr,
        partition=PartitionScheme(args.partition), alpha=args.alpha, strategy=strategy,
        secure=SecureMode(args.secure), dp=DPMode(args.dp), dropout=args.dropout, min_clients=args.min_clients,
        seed=args.seed, masking=MaskingConfig(neighbors=args.neighbors, threshold=args.threshold,
                                              consistency_check=args.consistency_check, clip=args.encode_clip,
                                              precision_bits=args.precision_bits),
        privacy=privacy, client_sampling=ClientSampling(args.client_sampling))


def run_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # refused settings stop here, before torch is imported

    from tqdm import tqdm

    from dp.ledger import finite
    from federation.checkpoint import writing
    from federation.experiment import build_federation
    from federation.report import summary_table

    out: Path = args.out
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    federation = build_federation(config, checkpoint_dir=out, overwrite=args.overwrite, threads=args.threads)
    bar = tqdm(total=config.rounds, desc="rounds", unit="round", disable=args.quiet, file=sys.stderr)

    def on_round(record: RoundRecord) -> None:
        bar.n = record.round
        acc = "-" if record.accuracy is None else f"{record.accuracy:.4f}"
        bar.set_postfix(acc=acc, dropped=len(record.dropped), refresh=False)
        bar.refresh()
        federation.history.save(out, plot=False)

    try:
        history = federation.run(resume=args.resume, on_round=on_round)
    finally:
        bar.close()
    federation.save(out)
    if not args.quiet:
        print(summary_table(history))
        last = history[-1]
        print(f"\nfinal accuracy {last.accuracy:.4f}, loss {last.loss:.4f} after {len(history)} rounds; "
              f"results in {out}")
        if history.ledger is not None:
            print(f"privacy: population epsilon {finite(history.epsilon())} at delta {history.ledger.delta} "
                  f"(secagg audit {out / 'ledger.json'})")
    return 0


def bench_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from federation.bench import report
    from federation.bench.runner import BenchCase, run_case

    if args.repeat < 1:
        raise ConfigError(f"repeat must be at least 1, got {args.repeat}")
    cases = [BenchCase(m, p, c, d) for m in args.modes for p in args.params for c in args.clients
             for d in args.dropout]
    command = "secagg bench " + " ".join(sys.argv[2:]) if argv_is_cli() else "secagg bench"
    sweep = _sweep(args)
    if sweep is not None:
        report.write(args.out, [], command, **sweep)
        _show(args)
        return 0
    if args.flower is not None:
        from federation.bench.flower import bench_flower

        return bench_flower(args.flower, args.out, command, seed=args.seed, quiet=args.quiet)
    if args.memory:
        from federation.bench.memory import MemoryCase, run_memory_case

        memory: list[dict] = []
        for m, p, c in tqdm([(m, p, c) for m in args.modes for p in args.params for c in args.clients],
                            desc="bench", unit="config", disable=args.quiet, file=sys.stderr):
            memory.append(run_memory_case(MemoryCase(m, p, c), seed=args.seed))
            report.write(args.out, [], command, memory=memory)  # kept as it goes: a big case may take long
        _show(args)
        return 0
    rows: list[dict] = []
    try:
        for case in tqdm(cases, desc="bench", unit="config", disable=args.quiet, file=sys.stderr):
            rows.append(run_case(case, repeat=args.repeat, seed=args.seed))
            report.write(args.out, rows, command)
    except KeyboardInterrupt:
        print(f"secagg: interrupted; {len(rows)} finished configurations kept in {args.out}", file=sys.stderr)
        return 130
    if args.end_to_end:
        from federation.bench.end_to_end import run_end_to_end

        modes = [SecureMode(m.value) for m in args.modes if m.value in {s.value for s in SecureMode}]
        report.write(args.out, rows, command, end_to_end=run_end_to_end(modes, rounds=args.rounds, seed=args.seed))
    _show(args)
    return 0


def _sweep(args: argparse.Namespace) -> dict[str, Any] | None:
    """The bench asked for instead of the protection modes' rows, as ``report.write``'s keyword; None if none."""
    if args.privacy is not None:
        from federation.bench.privacy_sweep import run_privacy_sweep

        return {"privacy": run_privacy_sweep(args.privacy, rounds=args.rounds, seed=args.seed)}
    if args.audit is not None:
        from federation.bench.audit_bench import parse_size, run_audit_bench

        return {"audit": run_audit_bench(*parse_size(args.audit))}
    if args.threads is not None:
        from federation.bench.threads import run_thread_bench

        return {"threads": run_thread_bench(args.threads, rounds=args.rounds, seed=args.seed)}
    return None


def _show(args: argparse.Namespace) -> None:
    if not args.quiet:
        print((args.out / "bench.md").read_text())


def argv_is_cli() -> bool:
    return len(sys.argv) > 1 and sys.argv[1] == "bench"


def resolve_run_options(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """Before anything is loaded: refuse options that would do nothing and a fresh run over another run's
    files; with ``--resume``, take the stored run's settings (explicit ones must match, but ``--rounds``)."""
    from federation.run_options import (check_requirements, claim_output, explicit_options, flags, resume_options,
                                        stored_options)

    explicit, flag = explicit_options(build_parser(), argv), flags(build_parser())
    claim_output(args.out, resume=args.resume, overwrite=args.overwrite)
    stored = stored_options(args.out) if args.resume else None
    if stored is not None:
        resume_options(args, explicit, stored, flag)
    check_requirements(args, explicit, flag)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Opacus's per-sample hooks on a first layer whose input needs no gradient: harmless, and said every batch
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    argv = list(argv) if argv is not None else sys.argv[1:]
    args = build_parser().parse_args(argv)
    from dp.errors import DPError
    from secagg.errors import SecAggError

    try:
        if args.command == "audit":
            from federation.audit_cli import audit_command

            return audit_command(args)
        if args.command == "bench":
            return bench_command(args)
        resolve_run_options(args, argv)
        if RuntimeName(args.runtime) is RuntimeName.FLOWER:
            from federation.flower.command import flower_command

            return flower_command(args, config_from_args(args))
        return run_command(args)
    except OutputError as err:
        hint = "; the last checkpoint is kept: --resume continues from it" if args.command == "run" else ""
        print(f"secagg: error: {err}{hint}", file=sys.stderr)
        return 2
    except (FederationError, SecAggError, DPError) as err:
        print(f"secagg: error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:  # outside a round (rounds raise OutOfMemory with their sizes)
        print(f"secagg: error: out of memory ({err or 'an allocation failed'}; "
              f"{available_memory()})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("secagg: interrupted; the checkpoint holds the last complete round (use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
