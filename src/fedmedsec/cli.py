"""``fedmedsec`` command line: run | sweep | report | list."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

def _user_errors() -> tuple[type[BaseException], ...]:
    from .config import ConfigError
    from .data.base import DataError
    from .data.partition import PartitionError
    from .engine import RunFailed

    return (ConfigError, DataError, PartitionError, RunFailed)


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _default_out(cfg) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.experiment.name}-{stamp}"


def print_summary(summary: dict, out: Path) -> None:
    t = Table(title=f"FedMedSec · {summary['experiment']}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("dataset / hospitals", f"{summary['dataset']} / {summary['num_hospitals']}"),
        ("attack / defense / privacy", f"{summary['attack']} / {summary['defense']} / {summary['privacy_mode']}"),
        ("malicious hospitals", ", ".join(map(str, summary["malicious_hospitals"])) or "none"),
        ("clean accuracy", _fmt(summary["clean_accuracy"])),
        ("worst hospital accuracy", _fmt(summary["worst_hospital_accuracy"])),
        ("worst honest hospital accuracy", _fmt(summary.get("worst_honest_hospital_accuracy"))),
        ("attack success rate", _fmt(summary["attack_success_rate"])),
        *([("  on the clean twin / lift", f"{_fmt(summary['attack_success_rate_clean'])} / "
                                         f"{_fmt(summary.get('attack_success_lift'))}")]
          if summary.get("attack_success_rate_clean") is not None else []),
        *([("balanced accuracy / AUROC", f"{_fmt(summary['clinical'].get('balanced_accuracy'))} / "
                                        f"{_fmt(summary['clinical'].get('auroc'))}"),
           (f"sensitivity / specificity ({summary['clinical'].get('positive_class')})",
            f"{_fmt(summary['clinical'].get('sensitivity'))} / {_fmt(summary['clinical'].get('specificity'))}")]
          if summary.get("clinical") else []),
        ("epsilon (delta)", f"{_fmt(summary['epsilon'], 2)} ({_fmt(summary.get('delta'), 6)})"),
    ]
    det = summary.get("detection")
    if det:
        rows.append(("detection TPR / FPR", f"{_fmt(det['tpr'])} / {_fmt(det['fpr'])}"))
    mia = summary.get("membership_inference")
    if mia:
        rows.append(("membership inference AUC", _fmt(mia.get("auc"))))
        if mia.get("lira"):
            rows.append(("LiRA AUC / TPR at 1% FPR",
                         f"{_fmt(mia['lira']['auc'])} / {_fmt(mia['lira']['tpr_at_1pct_fpr'])}"))
    rows += [
        ("rounds / seed", f"{summary['rounds']} / {summary['seed']}"),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
        ("run directory", str(out)),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    for note in summary.get("notes") or []:
        console.print(f"[dim]note: {note}[/dim]")
    if summary.get("epsilon_note"):
        console.print(f"[yellow]epsilon: {summary['epsilon_note']}[/yellow]")
    if summary.get("privacy_report"):
        from .privacy.report import privacy_line

        console.print(f"[dim]{privacy_line(summary)}[/dim]", soft_wrap=True)
    print_warnings(summary)


def print_warnings(summary: dict) -> None:
    """Each of the run's warnings (summary.json ``warnings``) on one yellow line."""
    for w in summary.get("warnings") or []:
        console.print(f"[yellow]warning: {w}[/yellow]", soft_wrap=True)


def cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .engine import run_experiment

    cfg = load_config(args.config, args.set or [])
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise ConfigError("--resume RUN_DIR continues that run directory: leave --out out")
        out = Path(args.resume)
        if (out / "summary.json").is_file():
            raise ConfigError(f"--resume {str(out)[:200]!r}: that run is complete (summary.json exists)")
    else:
        out = Path(args.out) if args.out else _default_out(cfg)
        refuse_complete_run(out, args.overwrite)
    rounds = cfg.experiment.rounds
    console.print(
        f"[bold]FedMedSec[/bold] {cfg.experiment.name}: {cfg.data.num_hospitals} hospitals on "
        f"{cfg.data.name} ({cfg.data.partition}), {rounds} rounds, attack {cfg.attack.name}, "
        f"defense {cfg.defense.name}, privacy {cfg.privacy.mode} -> {out}"
    )

    def on_round(row: dict) -> None:
        if args.quiet:
            return
        asr = row.get("attack_success_rate")
        console.print(
            f"  round {row['round']:>{len(str(rounds))}}/{rounds}  accuracy {_fmt(row['clean_accuracy'])}"
            f"  worst hospital {_fmt(row['worst_hospital_accuracy'])}"
            + (f"  attack success {_fmt(asr)}" if asr is not None else "")
            + (f"  dropped {row['dropped']}" if row.get("dropped") else "")
            + f"  {row['round_seconds']:.2f} s"
        )

    def on_twin_start() -> None:
        if not args.quiet:
            console.print("  clean twin: training the same federation without the attack (in-process), "
                          "so attack success can be read beside the trigger's own rate")

    summary = run_experiment(cfg, out, verbose=args.verbose, on_round=on_round, on_twin_start=on_twin_start,
                             resume=bool(args.resume))
    print_summary(summary, out)
    return 0


def refuse_complete_run(out: Path, overwrite: bool) -> None:
    """``--out`` onto a finished run (its summary.json exists) is refused unless asked."""
    from .config import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)[:200]!r} is a file, not a directory")
    if (out / "summary.json").is_file() and not overwrite:
        raise ConfigError(f"--out {str(out)[:200]!r} holds a complete run; choose another directory or "
                          "pass --overwrite")


def cmd_list(args: argparse.Namespace) -> int:
    from .components import registry_for

    for section in ("data", "model", "attack", "defense", "defense.pre"):
        reg = registry_for(section)
        console.print(f"[bold]{section}[/bold]: {', '.join(reg.names())}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .results.sweep import run_sweep_cli

    return run_sweep_cli(args)


def cmd_report(args: argparse.Namespace) -> int:
    from .results.report import report_cli

    return report_cli(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedmedsec", description="Security testbed for federated learning across hospitals.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one experiment")
    r.add_argument("config", help="experiment TOML file")
    r.add_argument("-s", "--set", action="append", metavar="KEY=VALUE", help="override, e.g. -s attack.name=alie")
    r.add_argument("--out", help="run directory (default runs/NAME-TIMESTAMP)")
    r.add_argument("--verbose", action="store_true", help="show Flower and Ray logs")
    r.add_argument("--quiet", action="store_true", help="no per-round lines")
    r.add_argument("--overwrite", action="store_true", help="replace a complete run in --out")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last completed round")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("sweep", help="run a grid of experiments")
    s.add_argument("grid", help="grid TOML file")
    s.add_argument("--out", required=True, help="sweep directory")
    s.add_argument("--verbose", action="store_true")
    s.set_defaults(func=cmd_sweep)
    rp = sub.add_parser("report", help="plots and an HTML page for a run or sweep directory")
    rp.add_argument("dir")
    rp.set_defaults(func=cmd_report)
    ls = sub.add_parser("list", help="list datasets, models, attacks and defenses")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        err_console.print(f"[red]error:[/red] {e}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
