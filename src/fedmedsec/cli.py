"""``fedmedsec`` command line: run | sweep | report | list, and ``--version``.

Output that is not a terminal (a log file, a pipe, CI) is never wrapped: every line is
printed as long as it is, and the sweep's progress bar becomes one line per finished run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

#: width of a console that is not a terminal (tables; plain lines are never wrapped)
LOG_WIDTH = 250


def make_console(*, stderr: bool = False, file=None) -> Console:
    """A console at the terminal's width; when output is not a terminal, one that never
    wraps (soft wrap: each line as long as it is) and lays tables out up to LOG_WIDTH."""
    c = Console(highlight=False, stderr=stderr, file=file)
    if not c.is_terminal:
        c = Console(highlight=False, stderr=stderr, file=file, soft_wrap=True, width=max(c.width, LOG_WIDTH))
    return c


console = make_console()
err_console = make_console(stderr=True)


def version() -> str:
    import importlib.metadata as md

    try:
        return md.version("fedmedsec")
    except md.PackageNotFoundError:
        return "unknown (not installed; pip install -e .)"


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that are user mistakes (one line, exit 2); only from modules already
    imported, so that an error of a light command does not import torch to be printed."""
    from .config import ConfigError

    errs: list[type[BaseException]] = [ConfigError]
    for mod, name in (("fedmedsec.data.base", "DataError"), ("fedmedsec.data.partition", "PartitionError"),
                      ("fedmedsec.rounds", "RunFailed")):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, name):
            errs.append(getattr(m, name))
    return tuple(errs)


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
    if args.dry_run:
        sets = "".join(f" -s {o}" for o in args.set or [])
        sys.stdout.write(f"# fedmedsec run {args.config}{sets} --dry-run: the resolved configuration; "
                         "nothing was run\n" + cfg.to_toml())
        sys.stdout.flush()
        return 0
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

    for k in cfg.dropped:
        console.print(f"[dim]note: {k} from {args.config} does not apply after the overrides; dropped[/dim]")

    def on_round(row: dict) -> None:
        if args.quiet:
            return
        asr = row.get("attack_success_rate")
        console.print(
            f"  round {row['round']:>{len(str(rounds))}}/{rounds}  accuracy {_fmt(row['clean_accuracy'])}"
            f"  worst hospital {_fmt(row['worst_hospital_accuracy'])}"
            + (f"  attack success {_fmt(asr)}" if asr is not None else "")
            + (f"  dropped replies {dropped}" if (dropped := row.get("dropped_replies", row.get("dropped"))) else "")
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


def _param_line(p: dict) -> str:
    from rich.markup import escape

    default = "required" if p.get("required") else json_text(p.get("default"))
    cons = f"  ({p['constraints']})" if p.get("constraints") else ""
    d = p.get("description") or ""
    desc = f"  {d if len(d) <= 110 else d[:110].rsplit(' ', 1)[0] + ' …'}" if d else ""
    return escape(f"      {p['name']}: {p['type']} = {default}{cons}{desc}")


def json_text(v) -> str:
    """A default as it would be written in a config (None: leave the key out)."""
    import json

    return "None" if v is None else json.dumps(v) if isinstance(v, (str, list, dict, bool)) else str(v)


def cmd_list(args: argparse.Namespace) -> int:
    """Components with their parameters, description and citation (``catalogue.py``: cached,
    so a listing does not import torch)."""
    from rich.markup import escape

    from . import catalogue
    from .config import ConfigError

    try:
        kinds = [catalogue.resolve_kind(args.kind)] if args.kind else list(catalogue.KINDS)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    data, _ = catalogue.load(refresh=args.refresh)
    if args.json:
        import json

        sys.stdout.write(json.dumps({k: data[k] for k in kinds}, indent=1) + "\n")
        return 0
    for kind in kinds:
        entries = data[kind]
        console.print(f"[bold]{kind}[/bold] ({len(entries)}): {', '.join(e['name'] for e in entries)}")
        for e in entries:
            flags = ", ".join(k if v is True else f"{k}={'+'.join(map(str, v)) if isinstance(v, list) else v}"
                              for k, v in e["meta"].items()
                              if v is not False and (not isinstance(v, str) or len(v) < 40))
            console.print(f"  [bold cyan]{escape(e['name'])}[/bold cyan]  {escape(e['description'])}"
                          + (f"  [dim]{escape(flags)}[/dim]" if flags else ""))
            if e["citation"]:
                console.print(f"      [dim]cite:[/dim] {escape(e['citation'])}")
            for p in e["params"]:
                console.print(_param_line(p))
        console.print("")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .results.sweep import run_sweep_cli

    return run_sweep_cli(args)


def cmd_report(args: argparse.Namespace) -> int:
    from .results.report import report_cli

    return report_cli(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedmedsec", description="Security testbed for federated learning across hospitals.")
    p.add_argument("--version", action="version", version=f"fedmedsec {version()}")
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
    r.add_argument("--dry-run", action="store_true", help="print the resolved configuration and stop")
    s = sub.add_parser("sweep", help="run a grid of experiments")
    s.add_argument("grid", help="grid TOML file")
    s.add_argument("--out", help="sweep directory (required unless --dry-run)")
    s.add_argument("-s", "--set", action="append", metavar="KEY=VALUE",
                   help="applied to every point like [fixed] (and over it), e.g. -s experiment.rounds=5")
    s.add_argument("--dry-run", action="store_true",
                   help="print the points and the resolved keys that differ between them, and stop")
    s.add_argument("--verbose", action="store_true")
    s.set_defaults(func=cmd_sweep)
    rp = sub.add_parser("report", help="plots and an HTML page for a run or sweep directory")
    rp.add_argument("dir")
    rp.set_defaults(func=cmd_report)
    ls = sub.add_parser("list", help="components with their parameters, defaults and citations")
    ls.add_argument("kind", nargs="?", help="data, data.partition, model, attack, attack.trigger, defense, "
                                             "defense.pre or detection (default: all)")
    ls.add_argument("--json", action="store_true", help="the catalogue as JSON")
    ls.add_argument("--refresh", action="store_true", help="rebuild the cached catalogue from the registries")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as e:
        from rich.markup import escape

        err_console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)  # "[grid]" stays text
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
