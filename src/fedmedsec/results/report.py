"""``fedmedsec report DIR``: figures (``DIR/plots/*.png`` at 300 dpi and ``*.pdf``) and one
self-contained ``DIR/report.html`` (figures embedded, tables, warnings, the resolved configs)
for a run or a sweep directory.

The report never mixes runs that differ. It reads every run's resolved config (config.toml,
with the sweep's point values and, for older runs, summary.json's names), finds every key
whose value differs between the runs (``Conditions``; the seed is the replicate), and each
figure and table keeps those configurations apart: as an axis, a panel or the series label,
with n per point and a 95% t-interval over seeds (a warning when n < 3). What each figure
plotted (series, x, n, the runs) is written to ``plots/series.json``.

Every piece is read defensively: a run without summary.json is listed as incomplete, a plot
without data is replaced by a note; nothing here raises on a partial directory. Only a DIR
that does not exist or holds no run at all is a user error.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ConfigError
from . import plots, tidy
from .plots import MISSING, label_of, role_label, short

#: keys that never split configurations: the replicate and where a run ran or was tracked
SEED_KEY = "experiment.seed"
NOT_A_CONDITION = ("simulation.ray_address", "tracking.")
#: summary.json names of older runs -> the config key they stand for
SUMMARY_ALIASES = {"attack": "attack.name", "defense": "defense.name", "privacy_mode": "privacy.mode",
                   "seed": "experiment.seed", "rounds": "experiment.rounds", "dataset": "data.name",
                   "mode": "experiment.mode", "num_hospitals": "data.num_hospitals"}


@dataclass
class Run:
    name: str
    path: Path
    summary: dict | None = None
    config: dict | None = None
    config_text: str = ""
    rounds: pd.DataFrame | None = None
    clients: pd.DataFrame | None = None
    values: dict = field(default_factory=dict)  # grid axis values (sweeps)
    problems: list[str] = field(default_factory=list)

    def keys(self) -> dict[str, Any]:
        """The run's resolved config as dotted keys, completed by the sweep's point values and
        by summary.json's names (runs whose config.toml lists only what they changed)."""
        flat = tidy.flatten_config(self.config or {})
        for k, v in self.values.items():
            if v is not None and k not in flat:
                flat[k] = tidy._text(v) if isinstance(v, (list, tuple)) else v
        for alias, key in SUMMARY_ALIASES.items():
            v = (self.summary or {}).get(alias)
            if key not in flat and v is not None:
                flat[key] = v
        return {k: v for k, v in flat.items() if not k.startswith(NOT_A_CONDITION)}

    def get(self, key: str, default: Any = None) -> Any:
        v = self.keys().get(SUMMARY_ALIASES.get(key, key))
        return default if v is None else v


def _read_csv(p: Path, problems: list[str]) -> pd.DataFrame | None:
    if not p.is_file():
        problems.append(f"{p.name} missing")
        return None
    t = tidy.read_run_csv(p)
    if t is None:
        problems.append(f"{p.name} unreadable")
        return None
    return tidy.typed(t.rename(columns=tidy.ROUND_RENAME),
                      tidy.CLIENT_KINDS if p.name == "clients.csv" else None)


def load_run(path: Path, name: str | None = None) -> Run:
    run = Run(name or path.name, path)
    s = path / "summary.json"
    if s.is_file():
        try:
            run.summary = json.loads(s.read_text())
            if not isinstance(run.summary, dict):
                raise ValueError
        except (json.JSONDecodeError, OSError, UnicodeDecodeError, ValueError):
            run.summary = None
            run.problems.append("summary.json unreadable")
    else:
        run.problems.append("no summary.json (incomplete or failed)")
    c = path / "config.toml"
    if c.is_file():
        try:
            run.config_text = c.read_text()
            run.config = tomllib.loads(run.config_text)
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            run.problems.append("config.toml unreadable")
    else:
        run.problems.append("config.toml missing")
    run.rounds = _read_csv(path / "rounds.csv", run.problems)
    run.clients = _read_csv(path / "clients.csv", run.problems)
    return run


def _is_run_dir(p: Path) -> bool:
    return any((p / f).is_file() for f in ("summary.json", "config.toml", "rounds.csv"))


def load_dir(root: str | Path) -> tuple[str, list[Run], dict]:
    """("run" | "sweep", runs, sweep metadata)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"report: {str(root)!r} is not a directory")
    if _is_run_dir(root) and not (root / "sweep.json").is_file():
        return "run", [load_run(root)], {}
    meta: dict = {}
    if (root / "sweep.json").is_file():
        try:
            meta = json.loads((root / "sweep.json").read_text())
        except (json.JSONDecodeError, OSError):
            meta = {}
    values = {p["run"]: p.get("values", {}) for p in meta.get("points", []) if isinstance(p, dict) and "run" in p}
    runs = []
    for d in sorted(root.iterdir()):
        if d.is_dir() and _is_run_dir(d):
            r = load_run(d)
            r.values = values.get(d.name, {})
            runs.append(r)
    if not runs:
        raise ConfigError(f"report: {str(root)!r} holds no run directory (no summary.json, config.toml or rounds.csv)")
    return "sweep", runs, meta


# --------------------------------------------------------------------------- conditions


def fmt_value(v: Any) -> str:
    """A key's value for labels: ``1``, ``0.003``, ``true``; missing -> ``–``."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


@dataclass
class Conditions:
    """How the runs differ. ``group``: every config key whose value differs between the
    complete runs, the seed excepted; ``label``: the fewest of them (grid axes first) that
    tell the same configurations apart, so grouping by ``label`` is grouping by ``group``."""

    group: list[str]
    label: list[str]
    n_configs: int

    @staticmethod
    def of(results: pd.DataFrame, axes: list[str]) -> Conditions:
        cols = [c for c in tidy.varying_keys(results) if c != SEED_KEY and not c.startswith(NOT_A_CONDITION)]
        if results.empty or not cols:
            return Conditions([], [], 1 if not results.empty else 0)
        disp = results[cols].astype(object).map(fmt_value)
        full = disp.drop_duplicates().shape[0]
        order = [k for k in axes if k in cols] + [k for k in cols if k not in axes]
        chosen: list[str] = []
        count = 1
        for k in order:
            if count == full:
                break
            c = disp[[*chosen, k]].drop_duplicates().shape[0]
            if c > count:
                chosen.append(k)
                count = c
        return Conditions(cols, chosen, full)


@dataclass
class Tables:
    """Everything the report draws: typed tables (``tidy``) and display views in which each
    label key holds its value as text."""

    results: pd.DataFrame
    view: pd.DataFrame
    rounds: pd.DataFrame
    hospitals: pd.DataFrame
    cond: Conditions
    refs: dict[str, float]
    delta: float | None


def _view(df: pd.DataFrame, results: pd.DataFrame, cond: Conditions) -> pd.DataFrame:
    if df.empty:
        return df
    out = df.drop(columns=[k for k in cond.label if k in df]).merge(
        results[["run", *cond.label]].astype(object), on="run", how="left")
    for k in cond.label:
        out[k] = out[k].map(fmt_value)
    out["config"] = out.apply(lambda r: label_of(r, cond.label), axis=1) if cond.label else "all runs"
    return out


def majority_rate(runs: list[Run]) -> float | None:
    """The share of the most frequent class on the evaluated test records (summary.json
    ``clinical.per_class`` supports), the accuracy of always predicting it; mean over runs."""
    rates = []
    for r in runs:
        per = ((r.summary or {}).get("clinical") or {}).get("per_class") or {}
        sup = [v.get("support") for v in per.values() if isinstance(v, dict) and isinstance(v.get("support"), (int, float))]
        if sup and sum(sup) > 0:
            rates.append(max(sup) / sum(sup))
    return float(np.mean(rates)) if rates else None


def build_tables(runs: list[Run], axes: list[str]) -> Tables:
    complete = [r for r in runs if r.summary]
    rows = []
    for r in complete:
        rows.append({"run": r.name, "status": "done", "error": "", "dropped_keys": "", **r.keys(),
                     **tidy.flatten_summary(r.summary)})
    results = tidy.results_frame(rows) if rows else tidy.results_frame([])
    cond = Conditions.of(results, axes)
    view = _view(results, results, cond)
    rparts = [r.rounds.assign(run=r.name) for r in complete if r.rounds is not None and "round" in r.rounds]
    rounds = _view(tidy.long_frame(rparts, results, keys=[]), results, cond) if rparts else pd.DataFrame()
    hparts = [pd.DataFrame(tidy.hospital_rows(r.name, r.summary)) for r in complete if tidy.hospital_rows(r.name, r.summary)]
    hospitals = _view(tidy.long_frame(hparts, results, keys=[]), results, cond) if hparts else pd.DataFrame()
    maj = majority_rate(complete)
    refs = {"majority class": maj} if maj is not None else {"chance (binary)": 0.5}
    d = pd.to_numeric(results.get("delta"), errors="coerce").dropna() if "delta" in results else pd.Series(dtype=float)
    return Tables(results, view, rounds, hospitals, cond, refs, float(d.iloc[0]) if len(d) else None)


def config_groups(view: pd.DataFrame, cond: Conditions,
                  metrics: tuple[str, ...] = ("clean_accuracy", "clinical_balanced_accuracy", "clinical_auroc",
                                              "worst_honest_hospital_accuracy", "attack_success_rate",
                                              "attack_success_rate_clean", "attack_success_lift", "epsilon",
                                              "mia_auc", "detection_tpr", "detection_fpr")) -> pd.DataFrame:
    """One row per configuration: its label keys, n (runs), and per metric the mean and the
    95% t-interval over its runs."""
    if view.empty:
        return pd.DataFrame()
    keys = cond.label
    metrics = tuple(m for m in metrics if m in view and pd.to_numeric(view[m], errors="coerce").notna().any()) \
        or (metrics[0],)
    out = None
    for i, m in enumerate(metrics):
        s = plots.summarise(view.assign(**({m: np.nan} if m not in view else {})), keys, m,
                            clip=None if m == "epsilon" else (0.0, 1.0))
        s = s.rename(columns={"mean": m, "lo": f"{m} lo", "hi": f"{m} hi"})
        if i == 0:
            out = s
        else:
            s = s.drop(columns=["runs", "n"])
            out = out.merge(s, on=keys, how="left") if keys else pd.concat([out, s], axis=1)
    out["label"] = out.apply(lambda r: label_of(r, keys), axis=1) if keys else "all runs"
    if keys:  # references (none, fedavg) first, numbers by value
        out = out.iloc[sorted(range(len(out)), key=lambda i: tuple(plots.order_key(out[k].iloc[i]) for k in keys))]
        out = out.reset_index(drop=True)
    return out


# --------------------------------------------------------------------------- threats


def threat_tables(view: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(impact, kinds, declared): threats × defenses. A column is a defense together with
    every other key that differs (``fedavg | privacy=dp_sgd · ε=1``), so nothing is averaged
    across configurations. Impact is, for a targeted attack, its lift over the clean twin
    (attack success minus the trigger's success on the same federation trained without the
    attack, per run, averaged; kind "lift") or, without a twin, the attack success rate
    ("ASR"); else the clean-accuracy drop against the no-attack runs of the same column
    ("drop"). ``impact.attrs["text"]`` holds each cell's text."""
    empty = pd.DataFrame()
    if view.empty or "attack.name" not in view:
        return empty, empty, empty
    a_keys, d_keys, rest = plots._role_keys(keys)
    d = view.copy()
    d["_attack"] = d.apply(lambda r: role_label(r, a_keys) if a_keys else fmt_value(r["attack.name"]), axis=1)
    d["_col"] = d.apply(lambda r: (role_label(r, d_keys) if d_keys else fmt_value(r.get("defense.name")))
                        + (f" | {label_of(r, rest)}" if rest else ""), axis=1)
    d["clean_accuracy"] = pd.to_numeric(d.get("clean_accuracy"), errors="coerce")
    d["_asr"] = pd.to_numeric(d["attack_success_rate"], errors="coerce") if "attack_success_rate" in d else np.nan
    is_none = d["attack.name"].astype(str) == "none"
    base = d[is_none].groupby("_col")["clean_accuracy"].mean()
    attacked = d[~is_none]
    if attacked.empty:
        return empty, empty, empty
    impacts, kinds, declared, texts = {}, {}, {}, {}
    d["_twin"] = pd.to_numeric(d["attack_success_rate_clean"], errors="coerce") \
        if "attack_success_rate_clean" in d else np.nan
    attacked = d[~is_none]
    for (attack, col), g in attacked.groupby(["_attack", "_col"]):
        targeted_decl = g["threat_targeted"].map(lambda x: x is True or str(x).lower() == "true").any() \
            if "threat_targeted" in g else False
        paired = g[g["_asr"].notna() & g["_twin"].notna()]
        if not paired.empty:
            asr, twin = float(paired["_asr"].mean()), float(paired["_twin"].mean())
            val, kind, text = asr - twin, "lift", f"lift {asr - twin:+.2f} (ASR {asr:.2f}, twin {twin:.2f})"
        elif g["_asr"].notna().any():
            val, kind = float(g["_asr"].mean()), "ASR"
            text = f"ASR {val:.2f}"
        else:
            b = base.get(col)
            drops = [b - a for a in g["clean_accuracy"] if b is not None and not math.isnan(b) and not math.isnan(a)]
            val, kind = (float(np.mean(drops)), "drop") if drops else (math.nan, "no baseline")
            text = f"accuracy {-val:+.2f}" if drops else "no baseline"
        impacts.setdefault(attack, {})[col] = val
        kinds.setdefault(attack, {})[col] = kind
        texts.setdefault(attack, {})[col] = text
        first = g.iloc[0]
        declared[attack] = {"goal": first.get("threat_goal", MISSING), "adversary": first.get("threat_adversary", MISSING),
                            "knowledge": first.get("threat_knowledge", MISSING),
                            "targeted": "yes" if (targeted_decl or g["_asr"].notna().any()) else "no"}
    cols = plots._order(d["_col"])
    impact = pd.DataFrame(impacts).T.reindex(columns=cols).sort_index()
    kind = pd.DataFrame(kinds).T.reindex(columns=cols).fillna(MISSING).sort_index()
    decl = pd.DataFrame(declared).T.sort_index()
    impact.attrs["text"] = pd.DataFrame(texts).T.reindex(index=impact.index, columns=cols).fillna("not run")
    return impact, kind, decl


# --------------------------------------------------------------------------- HTML

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:36px 0 8px;border-bottom:2px solid #e4e7ec;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}
p.lead{color:#5b6475;margin:0 0 16px} p.note{background:#fff8e6;border-left:4px solid #f0b429;padding:8px 12px;color:#5c4a12}
div.warn{background:#fff4e5;border:1px solid #f59f00;border-left:6px solid #e8590c;padding:10px 14px;margin:14px 0;border-radius:4px}
div.warn h3{margin:0 0 6px;color:#b35000} div.warn li{margin:3px 0}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{flex:1 1 150px;background:#f3f6fb;border-radius:8px;padding:10px 14px}
.card b{display:block;font-size:22px} .card span{color:#5b6475;font-size:12px}
figure{margin:12px 0 20px} figure img{max-width:100%;height:auto;border:1px solid #e4e7ec;border-radius:6px}
figcaption{color:#5b6475;font-size:13px;margin-top:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px}
th,td{border:1px solid #e0e3e8;padding:4px 8px;text-align:right} th{background:#f3f5f8;text-align:center}
td.l,th.l{text-align:left}
.scroll{overflow-x:auto;max-width:100%}
details{margin:6px 0} summary{cursor:pointer;color:#1f5fa8}
pre{background:#f6f8fa;padding:10px;border-radius:6px;font-size:12px;overflow-x:auto}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none;font-size:14px}
.bad{color:#b42318} .ci{color:#5b6475;font-size:11px}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or v is pd.NA:
        return MISSING
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return MISSING if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


SHORT = {"clean_accuracy": "clean acc.", "worst_honest_hospital_accuracy": "worst honest hospital",
         "attack_success_rate": "ASR", "attack_success_rate_clean": "ASR clean twin",
         "attack_success_lift": "ASR lift", "mia_auc": "MIA AUC", "detection_tpr": "detect. TPR",
         "detection_fpr": "detect. FPR", "wall_seconds": "seconds", "epsilon": "epsilon",
         "clinical_balanced_accuracy": "balanced acc.", "clinical_auroc": "AUROC",
         "clinical_sensitivity": "sensitivity", "clinical_specificity": "specificity",
         "dropped_replies": "dropped replies", "balanced_accuracy": "balanced acc.", "auroc": "AUROC"}


def _is_int(s: pd.Series) -> bool:
    return pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _table(df: pd.DataFrame, left: set[str] | None = None, max_rows: int = 500, digits: dict[str, int] | None = None) -> str:
    """An HTML table; integer columns as integers, columns with no value left out, long
    metric names shortened."""
    if df.empty:
        return "<p class='note'>no rows</p>"
    df = df[[c for c in df.columns if df[c].notna().any() and not df[c].astype(str).isin(["nan", "None", "<NA>"]).all()]]
    ints = {c for c in df.columns if _is_int(df[c])}
    left = left or set()
    head = "".join(f"<th class='{'l' if c in left else ''}'>{_esc(SHORT.get(c, short(c) if '.' in c else c))}</th>"
                   for c in df.columns)
    body = []
    for _, row in df.head(max_rows).iterrows():
        cells = []
        for c in df.columns:
            v = row[c]
            text = MISSING if pd.isna(v) else str(int(v)) if c in ints else _fmt(v, (digits or {}).get(c, 3))
            cells.append(f"<td class='{'l' if c in left else ''}'>{_esc(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = f"<p class='lead'>… {len(df) - max_rows} more rows in results.csv</p>" if len(df) > max_rows else ""
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(body)}</table></div>{more}"


def _ci_table(groups: pd.DataFrame, keys: list[str]) -> str:
    """Configurations × metrics: ``mean [lo, hi]`` (95% t-interval over seeds), n."""
    if groups.empty:
        return "<p class='note'>no complete run</p>"
    metrics = [m for m in ("clean_accuracy", "clinical_balanced_accuracy", "clinical_auroc",
                           "worst_honest_hospital_accuracy", "attack_success_rate", "attack_success_rate_clean",
                           "attack_success_lift", "epsilon", "mia_auc", "detection_tpr", "detection_fpr") if m in groups]
    head = "".join(f"<th class='l'>{_esc(short(k))}</th>" for k in keys) + "<th>n</th>" + \
        "".join(f"<th>{_esc(SHORT.get(m, m))}</th>" for m in metrics)
    rows = []
    for _, r in groups.iterrows():
        cells = "".join(f"<td class='l'>{_esc(r[k])}</td>" for k in keys)
        n = int(r["n"])
        cells += f"<td class='{'bad' if n < 3 else ''}'>{n}</td>"
        for m in metrics:
            v, lo, hi = r.get(m), r.get(f"{m} lo"), r.get(f"{m} hi")
            d = 2 if m == "epsilon" else 3
            if v is None or pd.isna(v):
                cells += f"<td>{MISSING}</td>"
            elif lo is not None and not pd.isna(lo):
                cells += f"<td>{v:.{d}f} <span class='ci'>[{lo:.{d}f}, {hi:.{d}f}]</span></td>"
            else:
                cells += f"<td>{v:.{d}f}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def _risk_html(impact: pd.DataFrame, kinds: pd.DataFrame, declared: pd.DataFrame) -> str:
    if impact.empty:
        return ""
    head = "<th class='l'>threat</th><th class='l'>goal</th><th class='l'>adversary</th><th class='l'>knowledge</th>" + \
        "".join(f"<th>{_esc(c)}</th>" for c in impact.columns)
    rows = []
    for attack in impact.index:
        dcl = declared.loc[attack] if attack in declared.index else {}
        cells = []
        for d in impact.columns:
            v, k = impact.at[attack, d], kinds.at[attack, d]
            if isinstance(v, float) and math.isnan(v):
                cells.append(f"<td style='color:#98a2b3'>{_esc(k if k != MISSING else 'not run')}</td>")
                continue
            a = min(max(float(v), 0.0), 1.0)
            bg = f"rgba(214,40,40,{0.08 + 0.8 * a:.2f})"
            fg = "#fff" if a > 0.55 else "#1d2330"
            text = impact.attrs.get("text")
            txt = text.at[attack, d] if text is not None else f"accuracy {-v:+.2f}" if k == "drop" else f"ASR {v:.2f}"
            cells.append(f"<td style='background:{bg};color:{fg}'>{txt}</td>")
        rows.append(f"<tr><td class='l'><b>{_esc(attack)}</b></td><td class='l'>{_esc(dcl.get('goal', MISSING))}</td>"
                    f"<td class='l'>{_esc(dcl.get('adversary', MISSING))}</td><td class='l'>{_esc(dcl.get('knowledge', MISSING))}</td>"
                    + "".join(cells) + "</tr>")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


class Page:
    def __init__(self, plot_dir: Path) -> None:
        self.plot_dir = plot_dir
        self.parts: list[str] = []
        self.images = 0
        self.notes: list[str] = []
        self.plotted: dict[str, plots.Plotted] = {}

    def h2(self, title: str, anchor: str, lead: str = "") -> None:
        self.parts.append(f"<h2 id='{anchor}'>{_esc(title)}</h2>" + (f"<p class='lead'>{lead}</p>" if lead else ""))

    def plot(self, fn, name: str, *args, **kwargs) -> None:
        """Draw ``fn(*args, plot_dir/name, **kwargs)``; embed its PNG and link its PDF."""
        path = self.plot_dir / name
        try:
            p = fn(*args, path, **kwargs)
        except plots.NoData as e:
            self.note(f"Plot skipped: {e}.")
            return
        except Exception as e:  # noqa: BLE001 - a bad plot must not lose the rest of the report
            plots.plt.close("all")
            self.note(f"Plot skipped: it failed on this data ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}).")
            return
        png = path.with_suffix(".png")
        data = base64.b64encode(png.read_bytes()).decode()
        self.images += 1
        self.plotted[name] = p
        from PIL import Image

        with Image.open(png) as im:
            w = round(im.width * 96 / plots.DPI)  # the figure's size in CSS pixels
        links = " · ".join(f"<a href='plots/{_esc(f.name)}'>{_esc(f.suffix[1:].upper())}</a>" for f in p.files)
        self.parts.append(f"<figure><img alt='{_esc(name)}' width='{w}' src='data:image/png;base64,{data}'>"
                          f"<figcaption>{_esc(p.caption)} <i>({links})</i></figcaption></figure>")

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.parts.append(f"<p class='note'>{_esc(text)}</p>")

    def warnings(self, title: str, items: list[str]) -> None:
        if not items:
            return
        self.notes += items
        lis = "".join(f"<li>{_esc(i)}</li>" for i in items)
        self.parts.append(f"<div class='warn'><h3>⚠ {_esc(title)}</h3><ul>{lis}</ul></div>")

    def raw(self, text: str) -> None:
        self.parts.append(text)


def _cards(items: list[tuple[str, str]]) -> str:
    return "<div class='cards'>" + "".join(f"<div class='card'><b>{_esc(v)}</b><span>{_esc(k)}</span></div>" for k, v in items) + "</div>"


def _configs(runs: list[Run]) -> str:
    out = []
    for r in runs:
        status = "" if r.summary else " <span class='bad'>(incomplete)</span>"
        out.append(f"<details><summary>{_esc(r.name)}{status}</summary><pre>{_esc(r.config_text or 'config.toml missing')}</pre></details>")
    return "".join(out)


def build_report(root: str | Path) -> tuple[Path, int, list[str]]:
    """Write ``root/plots/*.{png,pdf}``, ``root/plots/series.json`` and ``root/report.html``;
    returns (html path, images, notes)."""
    root = Path(root)
    kind, runs, meta = load_dir(root)
    plot_dir = root / "plots"
    plot_dir.mkdir(exist_ok=True)
    axes = list(meta.get("axes", {}))
    complete = [r for r in runs if r.summary]
    page = Page(plot_dir)
    title = f"FedMedSec report · {root.resolve().name}"
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")

    if kind == "run":
        _single_run(page, runs[0])
    else:
        _sweep(page, runs, complete, build_tables(runs, axes), meta, root)
    from .report_security import security_sections

    security_sections(page, root)  # evasion and backdoor durability, when the runs recorded them

    page.h2("Resolved configurations", "configs", "The configuration each run actually used (config.toml in its run directory).")
    page.raw(_configs(runs))
    (plot_dir / "series.json").write_text(json.dumps(
        {name: {"caption": p.caption, "files": [f.name for f in p.files], "points": p.points, "axes": p.axes}
         for name, p in page.plotted.items()}, indent=1, default=str))
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in [
        ("overview", "overview"), ("warnings", "warnings"), ("configurations", "configurations"),
        ("accuracy", "accuracy"), ("heatmaps", "attack × defense"), ("asr", "attack success"),
        ("threats", "threats"), ("privacy", "privacy"), ("hospitals", "hospitals"),
        ("detection", "detection"), ("seeds", "seeds"), ("evasion", "evasion"), ("durability", "durability"),
        ("configs", "configs")] if f"id='{a}'" in "".join(page.parts))
    body = "".join(page.parts)
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
           f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
           f"<body><main><h1>{_esc(title)}</h1><p class='lead'>{_esc(kind)} directory <code>{_esc(root.resolve())}</code>"
           f" · {len(complete)} of {len(runs)} run(s) complete · generated {now}</p><nav>{nav}</nav>{body}</main></body></html>")
    out = root / "report.html"
    out.write_text(doc)
    return out, page.images, page.notes


def _single_run(page: Page, r: Run) -> None:
    s = r.summary or {}
    page.h2("Overview", "overview")
    if r.problems:
        page.note("Incomplete run directory: " + "; ".join(r.problems) + ".")
    page.warnings("Warnings of this run (summary.json)", [str(w) for w in s.get("warnings") or []])
    det = s.get("detection") or {}
    mia = s.get("membership_inference") or {}
    clin = s.get("clinical") or {}
    cards = [("clean accuracy", _fmt(s.get("clean_accuracy")))]
    if clin:
        cards += [("balanced accuracy", _fmt(clin.get("balanced_accuracy"))), ("AUROC", _fmt(clin.get("auroc"))),
                  (f"sensitivity / specificity ({clin.get('positive_class', 'positive')})",
                   f"{_fmt(clin.get('sensitivity'), 2)} / {_fmt(clin.get('specificity'), 2)}")]
    cards += [("worst honest hospital", _fmt(s.get("worst_honest_hospital_accuracy"))),
              ("attack success rate", _fmt(s.get("attack_success_rate")))]
    if s.get("attack_success_rate_clean") is not None:
        cards.append(("ASR on the clean twin / lift",
                      f"{_fmt(s.get('attack_success_rate_clean'), 2)} / {_fmt(s.get('attack_success_lift'), 2)}"))
    cards += [("epsilon", _fmt(s.get("epsilon"), 2)), ("MIA AUC", _fmt(mia.get("auc"))),
              ("detection TPR / FPR", f"{_fmt(det.get('tpr'), 2)} / {_fmt(det.get('fpr'), 2)}" if det else MISSING)]
    page.raw(_cards(cards))
    tm = s.get("threat_model") or {}
    facts = pd.DataFrame([
        ("dataset / hospitals", f"{s.get('dataset', MISSING)} / {s.get('num_hospitals', MISSING)}"),
        ("attack", r.get("attack")), ("defense", r.get("defense")), ("privacy", r.get("privacy_mode")),
        ("malicious hospitals", ", ".join(map(str, s.get("malicious_hospitals", []))) or "none"),
        ("threat: goal / adversary / knowledge", f"{tm.get('goal', MISSING)} / {tm.get('adversary', MISSING)} / {tm.get('knowledge', MISSING)}" if tm else MISSING),
        ("rounds / seed", f"{s.get('rounds', MISSING)} / {s.get('seed', r.get('seed'))}"),
        ("wall time", f"{_fmt(s.get('wall_seconds'), 1)} s"),
    ], columns=["", "value"])
    page.raw(_table(facts, left={"", "value"}))
    maj = majority_rate([r]) if r.summary else None
    refs = {"majority class": maj} if maj is not None else {}
    page.h2("Accuracy by round", "accuracy")
    page.plot(plots.run_rounds, "accuracy_by_round", r.rounds, refs=refs)
    page.h2("Per-hospital metrics", "hospitals", "The cost to each hospital: the final global model on its own test split.")
    h = pd.DataFrame(tidy.hospital_rows(r.name, s)) if s else pd.DataFrame()
    if not h.empty:
        h = tidy.typed(h)
        page.plot(plots.run_hospitals, "per_hospital_accuracy", h)  # chance differs per hospital (label skew)
        page.raw(_table(h.drop(columns=["run"]), left={"hospital", "positive_class"}))
    else:
        page.note("Plot skipped: no per-hospital accuracy in summary.json.")
    page.h2("Client updates and detection", "detection")
    page.plot(plots.run_update_norms, "update_norms", r.clients)
    if r.rounds is not None and not r.rounds.empty:
        page.h2("Rounds", "rounds")
        cols = [c for c in ("round", "clean_accuracy", "balanced_accuracy", "auroc", "worst_hospital_accuracy",
                            "worst_honest_hospital_accuracy", "attack_success_rate", "attack_success_rate_clean",
                            "replies", "accepted", "dropped_replies", "epsilon", "round_seconds") if c in r.rounds]
        page.raw(_table(r.rounds[cols]))


def _failed_points(root: Path) -> list[tuple[str, str]]:
    p = root / "results.csv"
    if not p.is_file():
        return []
    try:
        t = pd.read_csv(p)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
        return []
    if "status" not in t:
        return []
    f = t[t["status"] == "failed"]
    return [(str(r["run"]), str(r.get("error", ""))) for _, r in f.iterrows()]


def _run_warnings(complete: list[Run]) -> list[str]:
    """summary.json warnings, one line per kind of warning (the same text up to its numbers),
    with how many runs raised it and which."""
    import re

    seen: dict[str, tuple[str, list[str], set[str]]] = {}
    for r in complete:
        for w in (r.summary or {}).get("warnings") or []:
            key = re.sub(r"-?\d+(\.\d+)?", "#", str(w))
            first, names, texts = seen.setdefault(key, (str(w), [], set()))
            texts.add(str(w))
            if r.name not in names:
                names.append(r.name)
    out = []
    for first, names, texts in seen.values():
        which = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        alike = " (its numbers differ between the runs; the first run's)" if len(texts) > 1 else ""
        out.append(f"{first}{alike} — {len(names)} of {len(complete)} runs: {which}")
    return out


def _sweep(page: Page, runs: list[Run], complete: list[Run], t: Tables, meta: dict, root: Path) -> None:
    cond, view = t.cond, t.view
    page.h2("Overview", "overview")
    groups = config_groups(view, cond)
    ns = groups["n"].astype(int).tolist() if not groups.empty else []
    page.raw(_cards([
        ("runs complete", f"{len(complete)} / {len(runs)}"),
        ("configurations", str(cond.n_configs)),
        ("runs (seeds) per configuration", (f"{min(ns)}" + (f"–{max(ns)}" if max(ns) != min(ns) else "")) if ns else "0"),
        ("keys that differ", ", ".join(short(k) for k in cond.label) or "none"),
        ("best configuration (clean acc.)", _fmt(groups["clean_accuracy"].max()) if not groups.empty else MISSING),
    ]))
    if meta.get("axes"):
        page.raw("<p class='lead'>Grid: " + "; ".join(f"<b>{_esc(k)}</b> ∈ {{{_esc(', '.join(map(str, v)))}}}"
                                                      for k, v in meta.get("axes", {}).items())
                 + ("; fixed: " + _esc(", ".join(f"{k} = {v}" for k, v in meta.get("fixed", {}).items())) if meta.get("fixed") else "")
                 + ("; -s: " + _esc(", ".join(f"{k} = {v}" for k, v in meta.get("overrides", {}).items())) if meta.get("overrides") else "")
                 + "</p>")
    if cond.group and set(cond.group) != set(cond.label):
        page.raw("<p class='lead'>Also differing, but determined by the keys above (so never pooled): "
                 + _esc(", ".join(k for k in cond.group if k not in cond.label)) + ".</p>")

    warn = []
    bad = [r for r in runs if not r.summary]
    failed = _failed_points(root)
    if bad or failed:
        items = [f"{r.name}: {'; '.join(r.problems)}" for r in bad]
        items += [f"{n}: {e}" for n, e in failed if n not in {r.name for r in bad}]
        warn.append(f"{len(items)} run(s) incomplete or failed, left out of every figure and table: " + " | ".join(items[:8]))
    few = groups[groups["n"] < 3] if not groups.empty else groups
    if not few.empty:
        warn.append(f"{len(few)} of {len(groups)} configuration(s) have fewer than 3 runs (seeds): their 95% intervals "
                    "are wide (n = 2) or undefined (n = 1); add seeds before reading differences: "
                    + "; ".join(f"{lab} (n={n})" for lab, n in zip(few["label"][:6], few["n"][:6])))
    warn += _run_warnings(complete)
    if warn:
        page.raw("<span id='warnings'></span>")
        page.warnings("Warnings", warn)
    if view.empty:
        page.note("No complete run yet: nothing to plot.")
        return

    page.h2("Configurations", "configurations",
            "One row per configuration (the keys that differ); each cell the mean over its runs and, in brackets, "
            "the 95% t-interval over seeds (mean ± t<sub>0.975, n−1</sub>·s/√n). n in red: fewer than 3 runs.")
    page.raw(_ci_table(groups, cond.label))
    cols = ["run", *cond.label, *[k for k in ("experiment.seed",) if k in view]] + [
        c for c in ("clean_accuracy", "clinical_balanced_accuracy", "clinical_auroc", "worst_honest_hospital_accuracy",
                    "attack_success_rate", "attack_success_rate_clean", "epsilon", "mia_auc", "detection_tpr",
                    "detection_fpr", "wall_seconds") if c in view]
    page.raw("<details><summary>every run</summary>" + _table(view[cols], left={"run", *cond.label}) + "</details>")

    keys = cond.label
    attacked = "attack.name" in view and (view["attack.name"].astype(str) != "none").any()
    has_dp = "privacy.mode" in view and view["privacy.mode"].astype(str).isin(["dp_sgd", "central"]).any()
    has_det = "detection_tpr" in view and pd.to_numeric(view["detection_tpr"], errors="coerce").notna().any()
    left_out = [name for name, present in (("attack success and threats", attacked),
                                           ("privacy-utility", has_dp), ("detection", has_det)) if not present]
    if left_out:
        page.raw("<p class='lead'>Not in this sweep, so left out: " + _esc("; ".join(left_out)) + " (no "
                 + _esc(", no ".join(w for w, present in (("attack", attacked), ("differential privacy", has_dp),
                                                         ("filtering defense under attack", has_det)) if not present))
                 + ").</p>")
    page.h2("Accuracy by round", "accuracy")
    page.plot(plots.by_round, "accuracy_by_round", t.rounds, keys, refs=t.refs)
    if not t.rounds.empty and "attack_success_rate" in t.rounds and \
            pd.to_numeric(t.rounds["attack_success_rate"], errors="coerce").notna().any():
        page.plot(plots.by_round, "attack_success_by_round", t.rounds, keys, metric="attack_success_rate",
                  label="attack success rate", twin="attack_success_rate_clean")

    page.h2("Attack × defense" if attacked else "Configurations × defense", "heatmaps")
    page.plot(plots.heatmap, "heatmap_clean_accuracy", view, keys, value="clean_accuracy",
              title="Clean accuracy", cmap="viridis", colorbar="clean accuracy")
    if attacked:
        page.plot(plots.heatmap, "heatmap_attack_success", view, keys, value="attack_success_rate",
                  title="Attack success rate (targeted attacks)", cmap="magma_r", colorbar="attack success rate")

        page.h2("Attack success by defense", "asr",
                "For targeted attacks: how often the trigger gets the target label under each defense, beside the rate "
                "the same trigger reaches on the clean twin (the federation trained without the attack). Only the "
                "difference (lift) is the attack's doing.")
        page.plot(plots.asr_by_defense, "asr_by_defense", view, keys)

        page.h2("Threats against defenses", "threats",
                "Each attack's declared threat model (goal, adversary, knowledge: the SoK taxonomy) and the impact "
                "measured under each defense: for targeted attacks the lift of the attack success rate over the clean "
                "twin (the trigger's success without the attack), or the attack success rate (ASR) where no twin was "
                "recorded; otherwise the drop in clean accuracy against the no-attack runs of the same column "
                "(positive = harm). Each column is one defense with every other key that differs.")
        impact, kinds, declared = threat_tables(view, keys)
        if impact.empty:
            page.note("No attacked runs: the risk matrix needs at least one attack other than none.")
        else:
            page.raw(_risk_html(impact, kinds, declared))
            page.plot(plots.threat_matrix, "threat_matrix", impact, kinds)

    if has_dp:
        page.h2("Privacy-utility", "privacy")
        page.plot(plots.privacy_utility, "privacy_utility", view, keys, refs=t.refs, delta=t.delta)
        if "mia_auc" in view and pd.to_numeric(view["mia_auc"], errors="coerce").notna().any():
            g = config_groups(view, cond, metrics=("mia_auc", "mia_tpr_at_1pct_fpr"))
            show = g[[c for c in [*keys, "n", "mia_auc", "mia_auc lo", "mia_auc hi", "mia_tpr_at_1pct_fpr"] if c in g]]
            show = show.rename(columns={"mia_auc": "MIA AUC", "mia_auc lo": "AUC 95% lo", "mia_auc hi": "AUC 95% hi",
                                        "mia_tpr_at_1pct_fpr": "TPR at 1% FPR"})
            page.raw("<h3>Membership inference on the final model</h3><p class='lead'>Loss-threshold attack on each "
                     "hospital's training records against held-out records; 0.5 is chance. Per configuration: mean and "
                     "95% t-interval over seeds.</p>" + _table(show, left=set(keys)))

    page.h2("Cost to honest hospitals", "hospitals")
    hosp = t.hospitals
    if not hosp.empty and "malicious" in hosp:
        hosp = hosp[~hosp["malicious"].fillna(False).astype(bool)]
    page.plot(plots.hospital_distribution, "hospital_accuracy", hosp, keys)  # each hospital's chance differs

    if has_det:
        page.h2("Detection", "detection")
        page.plot(plots.detection_rates, "detection", view, keys)

    page.h2("Mean and interval over seeds", "seeds")
    if not groups.empty:
        page.plot(plots.seed_spread, "seed_spread", groups.rename(
            columns={"clean_accuracy": "mean", "clean_accuracy lo": "lo", "clean_accuracy hi": "hi"}), refs=t.refs)


def report_cli(args) -> int:
    from ..cli import make_console

    console = make_console()
    out, images, notes = build_report(args.dir)
    console.print(f"[bold]report[/bold] {out} ({images} figures as PNG and PDF in {out.parent / 'plots'}, "
                  f"{len(notes)} notes)", soft_wrap=True)
    return 0
