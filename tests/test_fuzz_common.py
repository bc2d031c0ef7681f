"""Shared machinery of the fuzz suites (``test_fuzz_config.py``, ``test_fuzz_data.py``,
``test_fuzz_replies.py``): run the CLI in-process on one generated case and classify what
happened. No tests here.

A case ends in one of:

- ``clean_error``: exit 2 and one line on stderr naming what is wrong (``error: ...``);
- ``ok``: exit 0 and a run directory whose numbers mean something (``check_run_dir``);
- ``traceback``: an exception escaped ``main`` (or a traceback was printed, or an exit code
  other than 0/2, or the case ran past its time limit);
- ``messy_error``: exit 2 but more than one line, or a line that names nothing;
- ``dangerous``: exit 0 with a run that aggregated nothing, non-finite numbers, or another
  meaningless result.

``FEDMEDSEC_FUZZ_STATS=FILE`` appends one JSON line per case (suite, outcome, detail) to
FILE, for the table in the report (``tests/test_fuzz_common.py`` ``summarise``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import resource
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: a dotted config key, or one of the CLI's own arguments / the file being read
KEY_RE = re.compile(
    r"\b(experiment|data|model|train|attack|defense|detection|privacy|simulation|evasion)\.[A-Za-z_]"
    r"|--out|--resume|--overwrite|config file|grid file|override|unknown key|sections are|data\.path|"
    r"data file|\.csv|\.npz|[Gg]rid|^error: (report|sweep|run): ")

#: the address space a case may take (the machine is shared: an absurd model must fail, not
#: take the memory of every other process)
MEMORY_LIMIT = 6 * 2**30


class CaseTimeout(BaseException):
    """A case ran past its time limit (a hang, or a run far too slow for what it is)."""


@dataclass
class Outcome:
    argv: list[str]
    rc: int | None
    out: str
    err: str
    exc: str | None = None  # the traceback, when an exception escaped main()
    seconds: float = 0.0
    kind: str = ""  # clean_error | ok | traceback | messy_error | dangerous
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (f"argv={self.argv}\nrc={self.rc} kind={self.kind} detail={self.detail}\n"
                f"stderr:\n{self.err[-3000:]}\n" + (f"exception:\n{self.exc}" if self.exc else ""))


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise CaseTimeout()


@contextlib.contextmanager
def _limits(seconds: float):
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):  # already lower, or not allowed: leave it
        pass
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_cli(argv: list[str], timeout: float = 90.0) -> Outcome:
    """``fedmedsec.cli.main(argv)`` in this process with stdout/stderr captured; never
    raises (an escaping exception is returned as ``exc``)."""
    from fedmedsec.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc: int | None = None
    exc = None
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            with _limits(timeout):
                rc = main(list(argv))
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except CaseTimeout:
            exc = f"CaseTimeout: the case ran longer than {timeout:g} s"
        except BaseException:  # noqa: BLE001 - exactly what the suite looks for
            exc = traceback.format_exc()
    return Outcome(list(argv), rc, out.getvalue(), err.getvalue(), exc, time.perf_counter() - t0)


def error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def classify(o: Outcome, out_dir: Path | None, *, ok_codes=(0,), argparse_ok: bool = True,
             check=None) -> Outcome:
    """Fill ``o.kind`` / ``o.detail``. ``out_dir``: the run directory of a successful run
    (checked with ``check_run_dir``, or ``check`` when given)."""
    if o.exc is not None or "Traceback (most recent call last)" in o.err + o.out:
        o.kind, o.detail = "traceback", (o.exc or o.err).strip().splitlines()[-1][:300]
        return o
    if o.rc == 2:
        lines = error_lines(o.err)
        if argparse_ok and lines and lines[0].startswith("usage:"):
            # argparse's own usage error: usage lines then one "PROG: error: ..." line
            o.kind, o.detail = ("clean_error", lines[-1]) if ": error:" in lines[-1] else ("messy_error", o.err)
            return o
        if len(lines) != 1:
            o.kind, o.detail = "messy_error", f"{len(lines)} lines on stderr: {o.err[:500]!r}"
        elif not lines[0].startswith("error:"):
            o.kind, o.detail = "messy_error", f"not an error line: {lines[0][:300]!r}"
        elif not KEY_RE.search(lines[0]):
            o.kind, o.detail = "messy_error", f"names no key: {lines[0][:300]!r}"
        else:
            o.kind, o.detail = "clean_error", lines[0][:300]
        return o
    if o.rc in ok_codes:
        problem = (check or check_run_dir)(out_dir) if out_dir is not None else None
        o.kind, o.detail = ("dangerous", problem) if problem else ("ok", "")
        return o
    o.kind, o.detail = "traceback", f"exit code {o.rc}: {o.err[-300:]!r}"
    return o


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_run_dir(out_dir: Path) -> str | None:
    """Why a run that exited 0 is meaningless, or None: it must have a summary with a
    finite clean accuracy, have aggregated at least one reply, a finite float32 final
    model, and (DP-SGD) a finite epsilon."""
    out_dir = Path(out_dir)
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError) as e:
        return f"no readable summary.json ({type(e).__name__})"
    if not _finite(summary.get("clean_accuracy")):
        return f"clean_accuracy = {summary.get('clean_accuracy')!r}"
    try:
        with open(out_dir / "rounds.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return "no rounds.csv"
    accepted = sum(int(float(r.get("accepted") or 0)) for r in rows)
    if summary.get("mode") != "centralized" and accepted == 0:
        return "no reply was aggregated in any round"
    if summary.get("privacy_mode") == "dp_sgd" and not (_finite(summary.get("epsilon")) and summary["epsilon"] > 0):
        return f"DP-SGD run with epsilon {summary.get('epsilon')!r}"
    model = out_dir / "final_model.pt"
    if model.is_file():
        import torch

        state = torch.load(model, map_location="cpu", weights_only=True)
        for k, t in state.items():
            if torch.is_floating_point(t) and (t.dtype != torch.float32 or not torch.isfinite(t).all()):
                return f"final model {k}: dtype {t.dtype}, finite {bool(torch.isfinite(t).all())}"
    return None


def record(suite: str, o: Outcome) -> None:
    """Append the case to ``$FEDMEDSEC_FUZZ_STATS`` (JSON lines), if set."""
    path = os.environ.get("FEDMEDSEC_FUZZ_STATS")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"suite": suite, "kind": o.kind, "detail": o.detail[:300], "argv": o.argv[:12],
                            "seconds": round(o.seconds, 3), **o.extra}, default=str) + "\n")


def summarise(path: str | Path) -> dict[str, dict[str, int]]:
    """suite -> outcome kind -> count, from a stats file."""
    table: dict[str, dict[str, int]] = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        row = table.setdefault(r["suite"], {})
        row[r["kind"]] = row.get(r["kind"], 0) + 1
    return table


def toml_value(v) -> str:
    """A Python value as TOML value text (an override's right-hand side); inline tables
    and arrays, inf/nan spelled the TOML way."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))
