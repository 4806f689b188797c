"""``secagg audit``: epsilon per client and for the population from a run's ledger, or for ad hoc parameters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from federation.errors import ConfigError

if TYPE_CHECKING:
    from dp.ledger import PrivacyLedger


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("audit", help="audit a run's privacy ledger, or ad hoc DP-SGD parameters")
    p.add_argument("ledger", nargs="?", type=Path, help="a run's ledger.json (or its directory)")
    p.add_argument("--delta", type=float, default=None, help="delta to report at (default: the ledger's)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-prv", action="store_true", help="skip the PRV accountant")
    p.add_argument("--plot", type=Path, default=None, help="PNG of epsilon per round (default: beside the ledger)")
    p.add_argument("--empirical", action="store_true",
                   help="also measure a lower bound on epsilon: rerun the run in LEDGER's directory (its stored "
                        "settings) once with canaries (Steinke, Nasr, Jagielski 2023), into DIR/empirical")
    p.add_argument("--canaries", type=int, default=None,
                   help="--empirical: canaries (default 1000 examples for DP-SGD or no DP, 300 clients for "
                        "client-level DP)")
    p.add_argument("--noise-multiplier", type=float, help="ad hoc: noise multiplier z")
    p.add_argument("--sample-rate", type=float, help="ad hoc: Poisson sampling rate q")
    p.add_argument("--steps", type=int, help="ad hoc: number of steps T")


def audit_command(args: argparse.Namespace) -> int:
    from dp.audit import ad_hoc, audit
    from dp.errors import InvalidPrivacyParameter
    from dp.ledger import PrivacyLedger

    ad_hoc_args = (args.noise_multiplier, args.sample_rate, args.steps)
    if args.ledger is None:
        if any(a is None for a in ad_hoc_args) or args.delta is None:
            raise ConfigError("give a ledger, or all of --noise-multiplier, --sample-rate, --steps and --delta")
        try:
            result = ad_hoc(*ad_hoc_args, args.delta)
        except InvalidPrivacyParameter as err:
            raise ConfigError(str(err)) from None
        print(json.dumps(result) if args.json else
              f"epsilon at delta={args.delta}: RDP {result['epsilon']['rdp']:.4f}, PRV {result['epsilon']['prv']:.4f}")
        return 0
    path = args.ledger / "ledger.json" if args.ledger.is_dir() else args.ledger
    empirical = _empirical(path.parent, args.canaries) if args.empirical else None
    ledger = PrivacyLedger.load(path)
    report = audit(ledger, delta=args.delta, prv=not args.no_prv)
    plot = args.plot or path.with_name("epsilon.png")
    _plot(ledger, plot, args.delta, report)
    report["plot"] = str(plot)
    if empirical is not None:
        report["empirical"] = empirical
    print(json.dumps(report, indent=2) if args.json else _table(report))
    return 0


def _empirical(directory: Path, canaries: int | None) -> dict:
    """The run in ``directory`` again, with canaries, into ``directory/empirical``: its lower bound."""
    from federation.canary import CLIENT, default_level, run_empirical_audit
    from federation.experiment_config import ExperimentConfig
    from federation.run_options import _stored_config

    stored = _stored_config(directory)
    if stored is None:
        raise ConfigError(f"--empirical needs the settings of a secagg run in {directory} (its results.json)")
    config = ExperimentConfig.from_dict(stored)
    level = default_level(config)
    m = canaries if canaries is not None else (300 if level == CLIENT else 1000)
    return run_empirical_audit(config, m, directory / "empirical", level=level, overwrite=True)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _table(report: dict) -> str:
    rows = [("party", "unit", "neighbours", "eps RDP", "eps PRV", "zCDP rho", "rounds", "steps", "noise z", "q")]
    entries = [("population", report["population"])] if report["population"] else []
    entries += sorted(report["clients"].items(), key=lambda kv: int(kv[0]))
    for name, r in entries:
        prv = _fmt(r["epsilon_prv"]) + ("*" if r["prv_is_rdp_bound"] and r["epsilon_prv"] is not None else "")
        rows.append((name, str(r.get("unit") or "-"), str(r.get("relation") or "-"), _fmt(r["epsilon_rdp"]), prv,
                     _fmt(r.get("zcdp_rho")), str(r["rounds"]), str(r["steps"]),
                     ",".join(f"{z:.3g}" for z in r["noise_multipliers"]),
                     ",".join(f"{q:.3g}" for q in r["sampling_rates"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if any(r["prv_is_rdp_bound"] for _, r in entries):
        lines.append("* the RDP bound: discrete Gaussian releases have no exact PRV here")
    relations = {r.get("relation") for _, r in entries}
    if "replace-with-zero" in relations:
        lines.append("replace-with-zero: fixed-size client sampling, no amplification; one client's data swapped "
                     "for another's moves the sum by 2C: that relation costs what z/2 costs")
    if "add/remove" in relations:
        lines.append("add/remove: Poisson sampling (of examples by DP-SGD, or of clients), amplified at rate q")
    for a in report.get("empirical", {}).get("audits", []):
        upper = "-" if a["epsilon_upper"] is None else f"{a['epsilon_upper']:.4f}"
        lines.append(f"empirical ({a['level']} level, {a['m']} canaries, {a['correct']}/{a['guesses']} guesses "
                     f"right, {100 * (1 - a['confidence']):.0f}% confidence): epsilon >= {a['epsilon_lower']:.4f} "
                     f"(accounted <= {upper} for that run at delta {a['delta']:g})")
    return f"delta = {report['delta']}\n" + "\n".join(lines) + f"\nplot: {report['plot']}"


def _plot(ledger: PrivacyLedger, path: Path, delta: float | None, report: dict) -> None:
    from matplotlib.figure import Figure  # without pyplot: no GUI backend machinery to import

    from dp.audit import epsilon_per_round
    from dp.ledger import POPULATION

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    parties = ledger.parties()
    shown = [POPULATION] if POPULATION in parties else []
    clients = report["clients"]
    if clients:  # the client that spent most, by the report's RDP epsilon
        shown.append(int(max(clients, key=lambda c: clients[c]["epsilon_rdp"] or float("inf"))))
    for party in shown:
        points = epsilon_per_round(ledger, party, delta)
        if points:
            label = "population" if party == POPULATION else f"client {party} (largest)"
            ax.plot(*zip(*points), marker=".", label=label)
    ax.set(xlabel="round", ylabel="epsilon (RDP)", title="Privacy spent per round")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
