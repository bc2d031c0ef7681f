"""Plots for ``fedmedsec report`` (matplotlib, Agg backend).

Every plot function takes tidy frames (one row per run, or per run and round / hospital) in
which each configuration key that varies has its own column of display values, and
``keys``: the keys that tell the configurations apart (``report.Conditions``). A plot never
pools runs whose keys differ: each key is either an axis of the plot, a panel, or part of the
series label. Uncertainty is the 95% t-interval over the runs of one configuration (seeds),
mean +- t(0.975, n-1) s / sqrt(n); a configuration with one run has none, and its n says so.

Each function writes PNG (300 dpi) and PDF beside it, with a tight bounding box, and returns
a ``Plotted``: the caption and one record per plotted statistic (panel, series, x, n, runs),
which the report's tests check for pooling. ``NoData`` carries the note shown instead.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 300
FORMATS = ("png", "pdf")
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "font.size": 8.5, "axes.titlesize": 9,
                     "axes.labelsize": 8.5, "legend.fontsize": 7, "xtick.labelsize": 7.5, "ytick.labelsize": 7.5,
                     "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
                     "pdf.fonttype": 42, "savefig.bbox": "tight", "savefig.pad_inches": 0.05})
MISSING = "–"
#: short names of keys in labels; other keys show as the part after the section
SHORT = {"attack.name": "attack", "defense.name": "defense", "privacy.mode": "privacy",
         "detection.name": "detection", "data.name": "data", "model.name": "model",
         "privacy.target_epsilon": "ε", "privacy.noise_multiplier": "σ", "data.partition": "partition"}
PRIVACY_X = ("privacy.target_epsilon", "privacy.noise_multiplier")


class NoData(Exception):
    """A plot that lacks data; ``str(e)`` is the note shown instead."""


@dataclass
class Plotted:
    """What a plot drew: its caption, its files and one record per plotted statistic."""

    caption: str
    files: list[Path] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    size: tuple[float, float] = (6.0, 4.0)
    axes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, panel: str, series: str, x: Any, runs, n: int | None = None) -> None:
        runs = sorted(set(runs))
        self.points.append({"panel": panel, "series": series, "x": x, "runs": runs,
                            "n": len(runs) if n is None else n})


# --------------------------------------------------------------------------- helpers


def _tight(fig) -> None:
    """``fig.tight_layout()`` without its warning when long labels cannot fit: the figure is
    saved with ``bbox_inches="tight"``, which keeps every decoration in the file."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        fig.tight_layout()


def short(key: str) -> str:
    if key in SHORT:
        return SHORT[key]
    sec, _, rest = key.partition(".")
    return rest if sec in ("experiment", "attack", "defense", "privacy") and rest else key


def label_of(row: pd.Series | dict, keys: list[str], sep: str = " · ") -> str:
    """``attack=backdoor · defense=median``; keys whose value is missing are left out."""
    parts = [f"{short(k)}={row[k]}" for k in keys if k in row and str(row[k]) != MISSING]
    return sep.join(parts) or "all runs"


def role_label(row: pd.Series | dict, keys: list[str]) -> str:
    """The value of a ``*.name`` key bare, the other keys in parentheses:
    ``norm_bounding (noise_sigma=0.003)``; missing values are left out."""
    names = [str(row[k]) for k in keys if k.endswith(".name") and k in row and str(row[k]) != MISSING]
    extra = [f"{short(k)}={row[k]}" for k in keys if not k.endswith(".name") and k in row and str(row[k]) != MISSING]
    base = " ".join(names)
    if extra:
        return f"{base} ({', '.join(extra)})" if base else ", ".join(extra)
    return base or "all"


def t_interval(values) -> tuple[int, float, float, float]:
    """(n, mean, lo, hi) of the 95% t-interval; lo = hi = nan when n < 2."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return 0, math.nan, math.nan, math.nan
    m = float(v.mean())
    if n < 2:
        return n, m, math.nan, math.nan
    h = float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return n, m, m - h, m + h


def summarise(df: pd.DataFrame, by: list[str], value: str, clip: tuple[float, float] | None = (0.0, 1.0)) -> pd.DataFrame:
    """One row per ``by`` group: n, mean, lo, hi (95% t-interval over its rows, clipped to
    ``clip``: rates and AUCs live in [0, 1]), runs."""
    d = df[list(dict.fromkeys([*by, "run"]))].assign(  # a compact copy: no fragmented-frame warning
        _v=_finite(df[value])).dropna(subset=["_v"])
    rows = []
    for key, g in d.groupby(by, sort=False, dropna=False) if by else [((), d)]:
        key = key if isinstance(key, tuple) else (key,)
        n, m, lo, hi = t_interval(g["_v"].to_numpy())
        if clip is not None and n > 1:
            lo, hi = max(lo, clip[0]), min(hi, clip[1])
        rows.append({**dict(zip(by, key)), "n": n, "mean": m, "lo": lo, "hi": hi, "runs": sorted(set(g["run"]))})
    return pd.DataFrame(rows, columns=[*by, "n", "mean", "lo", "hi", "runs"])


def _finite(s) -> pd.Series:
    return pd.to_numeric(pd.Series(s), errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)


REFERENCES = ("none", "fedavg")


def order_key(v, first: tuple[str, ...] = REFERENCES) -> tuple:
    """References first (a label with ``none`` / ``fedavg`` in it), then numbers by value
    (also inside labels: ``ε=3`` before ``ε=10``), then text."""
    s = str(v)
    tokens = re.split(r"[=\s·,()|\n]+", s)
    ref = -sum(t in first for t in tokens)
    parts = tuple((0, float(t), "") if re.fullmatch(r"-?\d+(\.\d*)?(e-?\d+)?", t) else (1, 0.0, t)
                  for t in tokens if t)
    return (ref, parts)


def _order(values, first: tuple[str, ...] = REFERENCES) -> list:
    return sorted(set(values), key=lambda v: order_key(v, first))


def _grid(n: int, width: float, height: float, max_cols: int = 3):
    cols = max(1, min(n, max_cols))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def save(fig, path: Path, plotted: Plotted) -> Plotted:
    """``path`` with .png (300 dpi) and .pdf, tight bounding box (nothing clipped)."""
    plotted.size = tuple(fig.get_size_inches())
    for fmt in FORMATS:
        p = path.with_suffix(f".{fmt}")
        fig.savefig(p, format=fmt, dpi=DPI, bbox_inches="tight", pad_inches=0.05)
        plotted.files.append(p)
    for ax in fig.axes:  # what a reader sees, for the tests: labels, ranges, ticks
        if not ax.get_visible():
            continue
        plotted.axes.append({
            "colorbar": ax.get_label() == "<colorbar>", "title": ax.get_title(),
            "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "xlim": [float(v) for v in ax.get_xlim()], "ylim": [float(v) for v in ax.get_ylim()],
            "xscale": ax.get_xscale(), "xticks": [float(v) for v in ax.get_xticks()],
            "xticklabels": [t.get_text() for t in ax.get_xticklabels()]})
    plt.close(fig)
    return plotted


def colors_for(labels) -> dict:
    labels = list(dict.fromkeys(labels))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def split_keys(keys: list[str], df: pd.DataFrame, panel_first: tuple[str, ...] = ("attack.",),
               max_lines: int = 6, exclude: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(panel keys, series keys): keys with a ``panel_first`` prefix make panels; more keys
    move to panels (defense first) while a panel would hold more than ``max_lines`` series."""
    keys = [k for k in keys if k not in exclude]
    panel = [k for k in keys if k.startswith(panel_first)]
    line = [k for k in keys if k not in panel]

    def lines_per_panel() -> int:
        if not line:
            return 1
        if not panel:
            return df[line].drop_duplicates().shape[0]
        return int(df.groupby(panel)[line].apply(lambda g: g.drop_duplicates().shape[0]).max())

    order = sorted(line, key=lambda k: (not k.startswith("defense."), line.index(k)))
    while line and lines_per_panel() > max_lines and len(line) > 1:
        k = order.pop(0)
        line.remove(k)
        panel.append(k)
    return panel, line


def _reference_lines(ax, refs: dict[str, float] | None) -> list[float]:
    """Dotted horizontal references (``{"majority class": 0.63}``); their values."""
    out = []
    for i, (name, v) in enumerate((refs or {}).items()):
        if v is None or not np.isfinite(v):
            continue
        ax.axhline(v, color="black", ls=":" if i == 0 else "-.", lw=0.9, alpha=0.7, label=f"{name} ({v:.2f})")
        out.append(v)
    return out


def _ylim(ax, values, refs: list[float], lo_cap: float = 0.0, hi_cap: float = 1.0, min_span: float = 0.2) -> None:
    """A y range over the data and the references (chance), at least ``min_span`` wide."""
    v = [x for x in [*values, *refs] if x is not None and np.isfinite(x)]
    if not v:
        ax.set_ylim(lo_cap, hi_cap)
        return
    lo, hi = min(v), max(v)
    if hi - lo < min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    pad = 0.04 * (hi - lo)
    lo, hi = max(lo_cap, lo - pad), min(hi_cap, hi + pad)
    if hi - lo < min_span:  # pushed against a cap
        lo, hi = (lo, min(hi_cap, lo + min_span)) if lo == lo_cap else (max(lo_cap, hi - min_span), hi)
    ax.set_ylim(lo - 0.01 * (hi - lo), hi + 0.01 * (hi - lo))


def _int_x(ax) -> None:
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))


def _n_note(ns) -> str:
    ns = [int(n) for n in ns if n]
    if not ns:
        return ""
    lo, hi = min(ns), max(ns)
    band = "95% t-interval over seeds, clipped to [0, 1]" if hi >= 2 else "one run per configuration: no interval"
    return f"n = {lo}" + (f"..{hi}" if hi != lo else "") + f" runs per point; {band}" + (
        " (n < 3: the interval is wide)" if 2 <= lo < 3 else "")


# --------------------------------------------------------------------------- sweep plots


def by_round(rounds: pd.DataFrame, keys: list[str], path: Path, metric: str = "clean_accuracy",
             label: str = "clean accuracy", refs: dict[str, float] | None = None,
             twin: str | None = None) -> Plotted:
    """``rounds``: one row per (run, round) with the key columns and ``metric``. Panels by
    attack (and more keys when crowded), one line per remaining configuration: the mean over
    its runs with the 95% t-interval as a band; ``twin``: a column drawn dashed beside each
    line (the clean twin's rate)."""
    if rounds.empty or metric not in rounds or _finite(rounds[metric]).notna().sum() == 0:
        raise NoData(f"no per-round {label} recorded")
    r = rounds.assign(_v=_finite(rounds[metric])).dropna(subset=["_v"])
    panel_keys, line_keys = split_keys(keys, r)
    panels = _order(r.apply(lambda x: label_of(x, panel_keys), axis=1)) if panel_keys else ["all runs"]
    r = r.assign(_panel=r.apply(lambda x: label_of(x, panel_keys), axis=1) if panel_keys else "all runs",
                 _line=r.apply(lambda x: label_of(x, line_keys), axis=1) if line_keys else "all runs")
    colors = colors_for(_order(r["_line"]))
    fig, axes = _grid(len(panels), 4.3, 3.0)
    plotted = Plotted("")
    ns, ys = [], []
    for ax, p in zip(axes, panels):
        sub = r[r["_panel"] == p]
        for line in _order(sub["_line"]):
            g = sub[sub["_line"] == line]
            s = summarise(g, ["round"], "_v").sort_values("round")
            n = g["run"].nunique()
            ns.append(n)
            ax.plot(s["round"], s["mean"], marker="o", ms=2.5, lw=1.2, color=colors[line], label=f"{line} (n={n})")
            if (s["n"] > 1).any():
                ax.fill_between(s["round"], s["lo"], s["hi"], color=colors[line], alpha=0.12, lw=0)
                ys += [*s["lo"].dropna(), *s["hi"].dropna()]
            ys += list(s["mean"])
            for _, row in s.iterrows():
                plotted.add(p, line, int(row["round"]), row["runs"])
            if twin and twin in g and _finite(g[twin]).notna().any():
                t = summarise(g.assign(_t=_finite(g[twin])), ["round"], "_t").sort_values("round")
                ax.plot(t["round"], t["mean"], ls="--", lw=1.0, color=colors[line], alpha=0.8,
                        label=f"{line}: clean twin")
                ys += list(t["mean"])
        ref_vals = _reference_lines(ax, refs)
        _ylim(ax, ys, ref_vals)
        ax.set_title(p if panel_keys else "")
        _int_x(ax)
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _tight(fig)
    plotted.caption = (f"{label.capitalize()} by round, one line per configuration (mean over its runs; band: "
                       f"{_n_note(ns)})" + ("; dashed: the clean twin, the same run without the attack" if twin else "")
                       + (f"; dotted: {', '.join(refs)}" if refs else "") + ".")
    return save(fig, path, plotted)


def _role_keys(keys: list[str]) -> tuple[list[str], list[str], list[str]]:
    attack = [k for k in keys if k.startswith("attack.")]
    defense = [k for k in keys if k.startswith(("defense.", "detection."))]
    rest = [k for k in keys if k not in attack and k not in defense]
    return attack, defense, rest


def heatmap(runs: pd.DataFrame, keys: list[str], path: Path, value: str, title: str, cmap: str = "viridis",
            vmin: float = 0.0, vmax: float = 1.0, colorbar: str | None = None) -> Plotted:
    """Attack (rows) × defense (columns), one panel per combination of the other keys; each
    cell the mean over runs with its 95% t-interval half-width and n."""
    c = runs.assign(_v=_finite(runs[value])).dropna(subset=["_v"]) if value in runs else runs.iloc[0:0]
    if c.empty:
        raise NoData(f"no run recorded {value.replace('_', ' ')}")
    a_keys, d_keys, rest = _role_keys(keys)
    if not a_keys and rest:  # no attack varies: the other keys make the rows, not panels
        a_keys, rest = rest, []
    c = c.assign(_row=c.apply(lambda x: role_label(x, a_keys), axis=1) if a_keys else "all",
                 _col=c.apply(lambda x: role_label(x, d_keys), axis=1) if d_keys else "all",
                 _panel=c.apply(lambda x: label_of(x, rest), axis=1) if rest else "")
    if c["_row"].nunique() * c["_col"].nunique() < 2:
        raise NoData("needs more than one attack or defense")
    rows, cols, panels = _order(c["_row"]), _order(c["_col"]), _order(c["_panel"])
    fig, axes = _grid(len(panels), 1.15 * len(cols) + 2.6, 0.55 * len(rows) + 1.7, max_cols=2)
    plotted = Plotted("")
    ns = []
    for ax, p in zip(axes, panels):
        sub = c[c["_panel"] == p]
        s = summarise(sub, ["_row", "_col"], "_v")
        mean = s.pivot(index="_row", columns="_col", values="mean").reindex(index=rows, columns=cols)
        im = ax.imshow(mean.to_numpy(dtype=float), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
        ax.set_yticks(range(len(rows)), rows)
        ax.grid(False)
        for _, row in s.iterrows():
            i, j = rows.index(row["_row"]), cols.index(row["_col"])
            half = (row["hi"] - row["lo"]) / 2
            ns.append(row["n"])
            txt = f"{row['mean']:.2f}" + (f"\n±{half:.2f}" if np.isfinite(half) else "") + f"\nn={row['n']}"
            rgba = im.cmap(im.norm(row["mean"]))
            lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
            ax.text(j, i, txt, ha="center", va="center", fontsize=6.5, color="black" if lum > 0.5 else "white")
            plotted.add(p, row["_row"], row["_col"], row["runs"])
        for i in range(len(rows)):
            for j in range(len(cols)):
                if np.isnan(mean.iat[i, j]):
                    ax.text(j, i, "not run", ha="center", va="center", color="grey", fontsize=6.5)
        ax.set_xlabel(" / ".join(short(k) for k in d_keys) or "defense")
        ax.set_ylabel(" / ".join(short(k) for k in a_keys) if a_keys else "attack")
        if p:
            ax.set_title(p)
        fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03, label=colorbar or title)
    fig.suptitle(title)
    _tight(fig)
    plotted.caption = (f"{title}: {' / '.join(short(k) for k in a_keys) or 'attack'} (rows) × defense (columns)"
                       + (f", one panel per {', '.join(short(k) for k in rest)}" if rest else "")
                       + f"; each cell: mean ± 95% t-interval half-width over seeds, n runs ({_n_note(ns)}).")
    return save(fig, path, plotted)


def asr_by_defense(runs: pd.DataFrame, keys: list[str], path: Path) -> Plotted:
    """Targeted attacks: the attack success rate per defense, with the clean twin's rate
    (the trigger on a model never poisoned) beside it; bars = mean, whiskers = 95% t-interval."""
    if "attack_success_rate" not in runs or _finite(runs["attack_success_rate"]).notna().sum() == 0:
        raise NoData("no targeted attack (no attack success rate recorded)")
    r = runs[_finite(runs["attack_success_rate"]).notna()]
    a_keys, d_keys, rest = _role_keys(keys)
    r = r.assign(_panel=r.apply(lambda x: label_of(x, [*a_keys, *rest]), axis=1) if (a_keys or rest) else "all runs",
                 _x=r.apply(lambda x: role_label(x, d_keys), axis=1) if d_keys else "all runs")
    has_twin = "attack_success_rate_clean" in r and _finite(r["attack_success_rate_clean"]).notna().any()
    panels = _order(r["_panel"])
    xs_all = _order(r["_x"])
    fig, axes = _grid(len(panels), max(3.4, 0.75 * len(xs_all) + 1.8), 3.0, max_cols=2)
    plotted = Plotted("")
    ns = []
    for ax, p in zip(axes, panels):
        sub = r[r["_panel"] == p]
        xs = _order(sub["_x"])
        asr = summarise(sub, ["_x"], "attack_success_rate").set_index("_x").reindex(xs)
        width = 0.38 if has_twin else 0.6
        off = -width / 2 if has_twin else 0.0
        x = np.arange(len(xs))
        err = np.vstack([(asr["mean"] - asr["lo"]).fillna(0), (asr["hi"] - asr["mean"]).fillna(0)])
        ax.bar(x + off, asr["mean"], width, yerr=err, capsize=2.5, color="#c1121f", label="attack success rate")
        for i, xv in enumerate(xs):
            ns.append(asr.at[xv, "n"])
            ax.text(x[i] + off, min(1.0, (asr.at[xv, "hi"] if np.isfinite(asr.at[xv, "hi"]) else asr.at[xv, "mean"])) + 0.03,
                    f"n={asr.at[xv, 'n']}", ha="center", fontsize=6)
            plotted.add(p, "attack", xv, asr.at[xv, "runs"])
        if has_twin:
            tw = summarise(sub, ["_x"], "attack_success_rate_clean").set_index("_x").reindex(xs)
            err = np.vstack([(tw["mean"] - tw["lo"]).fillna(0), (tw["hi"] - tw["mean"]).fillna(0)])
            ax.bar(x + width / 2, tw["mean"].fillna(0), width, yerr=err, capsize=2.5, color="#adb5bd",
                   hatch="//", edgecolor="#6c757d", label="clean twin (no attack)")
            for i, xv in enumerate(xs):
                if isinstance(tw.at[xv, "runs"], list):
                    plotted.add(p, "clean twin", xv, tw.at[xv, "runs"])
                if not np.isfinite(tw.at[xv, "mean"]):
                    ax.text(x[i] + width / 2, 0.02, "not\nrecorded", ha="center", fontsize=5.5, color="grey")
        ax.set_xticks(x, xs, rotation=0 if len(xs) <= 4 else 30, ha="center" if len(xs) <= 4 else "right")
        ax.set_ylim(0, 1.12)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_xlabel(" / ".join(short(k) for k in d_keys) or "defense")
        ax.set_ylabel("attack success rate")
        ax.set_title(p)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _tight(fig)
    plotted.caption = ("Attack success rate (targeted attacks) per defense" + (
        "; grey hatched: the trigger's success on the clean twin (the same federation trained without the attack), "
        "the rate the trigger reaches on its own" if has_twin else "; no clean twin was recorded for these runs")
        + f"; whiskers: {_n_note(ns)}.")
    return save(fig, path, plotted)


def _eps_axis(ax, values: list[float], label: str) -> None:
    ax.set_xscale("log")
    vals = sorted({float(v) for v in values if np.isfinite(v) and v > 0})
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(vals))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if vals:
        ax.set_xlim(vals[0] / 1.6, vals[-1] * 1.6)
    ax.set_xlabel(label)


def privacy_utility(runs: pd.DataFrame, keys: list[str], path: Path, refs: dict[str, float] | None = None,
                    delta: float | None = None) -> Plotted:
    """Privacy budget (x, log scale, ticks at the values run) against clean accuracy and
    membership-inference AUC: one line per configuration of the other keys (defense, ...),
    the runs without DP of that same configuration as its own dashed "no DP" reference."""
    if "privacy.mode" not in runs:
        raise NoData("no privacy.mode recorded")
    dp = runs[runs["privacy.mode"].astype(str).isin(["dp_sgd", "central"])]
    if dp.empty:
        raise NoData("no run with differential privacy")
    xkey = next((k for k in PRIVACY_X if k in keys and k in dp and (dp[k].astype(str) != MISSING).any()), None)
    if xkey == "privacy.target_epsilon":
        x_of = _finite(dp[xkey])
        xlabel = "privacy budget ε (target" + (f", δ = {delta:g}" if delta else "") + "; log scale)"
    else:
        x_of = _finite(dp["epsilon"]) if "epsilon" in dp else pd.Series(np.nan, index=dp.index)
        xlabel = "privacy budget ε reached (" + (f"δ = {delta:g}; " if delta else "") + "log scale)"
    dp = dp.assign(_x=x_of.to_numpy())
    if dp["_x"].notna().sum() == 0:
        raise NoData("the DP runs recorded no epsilon")
    modes = dp["privacy.mode"].astype(str).unique()
    drop = {"privacy.mode", xkey} if len(modes) == 1 else {xkey}
    line_keys = [k for k in keys if k not in drop]
    # a point per configuration: the target ε, the noise multiplier, or (neither varies) the line's
    # only DP configuration; x is then the mean ε its runs reached
    group_x = xkey or "_one"
    dp = dp.assign(_one="dp")
    metrics = [("clean_accuracy", "clean accuracy")]
    if "mia_auc" in runs and _finite(runs["mia_auc"]).notna().any():
        metrics.append(("mia_auc", "membership-inference AUC"))
    nodp = runs[runs["privacy.mode"].astype(str) == "none"]
    label_fn = (lambda x: label_of(x, line_keys)) if line_keys else (lambda x: "all runs")
    dp = dp.assign(_line=dp.apply(label_fn, axis=1))
    nodp = nodp.assign(_line=nodp.apply(label_fn, axis=1)) if not nodp.empty else nodp.assign(_line=[])
    lines = _order([*dp["_line"], *nodp["_line"]])
    colors = colors_for(lines)
    fig, axes = _grid(len(metrics), 4.2, 3.2, max_cols=2)
    plotted = Plotted("")
    ns = []
    for ax, (col, lab) in zip(axes, metrics):
        ys = []
        for k, line in enumerate(lines):
            g = dp[dp["_line"] == line]
            if not g.empty and col in g:
                s = summarise(g, [group_x], col)
                x_at = g.groupby(group_x, sort=False, dropna=False)["_x"].mean()
                xs = s[group_x].map(x_at).to_numpy(dtype=float)
                order = np.argsort(xs)
                s, xs = s.iloc[order], xs[order]
                jit = xs * (1 + 0.025 * (k - (len(lines) - 1) / 2))  # lines side by side, not on top
                err = np.vstack([(s["mean"] - s["lo"]).fillna(0), (s["hi"] - s["mean"]).fillna(0)])
                ax.errorbar(jit, s["mean"], yerr=err, marker="o", ms=3.5, capsize=2.5, lw=1.2,
                            color=colors[line], label=f"{line} (n={int(s['n'].min())}" +
                            (f"..{int(s['n'].max())}" if s["n"].max() != s["n"].min() else "") + ")")
                ns += list(s["n"])
                ys += [*s["mean"], *s["lo"].dropna(), *s["hi"].dropna()]
                for (_, row), xv in zip(s.iterrows(), xs):
                    plotted.add(lab, line, float(xv), row["runs"])
            b = nodp[nodp["_line"] == line] if not nodp.empty else nodp
            if not b.empty and col in b and _finite(b[col]).notna().any():
                n, m, lo, hi = t_interval(_finite(b[col]).to_numpy())
                ax.axhline(m, color=colors[line], ls="--", lw=1.0, label=f"{line}: no DP (n={n})")
                if np.isfinite(lo):
                    ax.axhspan(lo, hi, color=colors[line], alpha=0.08, lw=0)
                    ys += [lo, hi]
                ys.append(m)
                ns.append(n)
                plotted.add(lab, f"{line}: no DP", "no DP", list(b["run"]))
        refs_here = {"chance": 0.5} if col == "mia_auc" else refs
        ref_vals = _reference_lines(ax, refs_here)
        if col == "mia_auc":
            _ylim(ax, ys, ref_vals, lo_cap=0.0, hi_cap=1.0, min_span=0.3)
        else:
            _ylim(ax, ys, ref_vals)
        _eps_axis(ax, list(dp["_x"]), xlabel)
        ax.set_ylabel(lab)
        ax.set_title(("Clean accuracy" if col == "clean_accuracy" else "Membership-inference AUC") + " against ε")
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    _tight(fig)
    plotted.caption = ("Privacy-utility: ε on a log scale with a tick at each value run; one line per "
                       + (", ".join(short(k) for k in line_keys) or "configuration")
                       + "; dashed: the runs without DP of the same configuration (band: their interval); "
                       + ("membership-inference AUC with chance (0.5) dotted; " if len(metrics) > 1 else "")
                       + f"error bars: {_n_note(ns)}.")
    return save(fig, path, plotted)


def hospital_distribution(hosp: pd.DataFrame, keys: list[str], path: Path, refs: dict[str, float] | None = None) -> Plotted:
    """``hosp``: one row per (run, honest hospital) with the key columns and accuracy. One
    box per configuration (all its runs' hospitals), panels by attack."""
    if hosp.empty or "accuracy" not in hosp or _finite(hosp["accuracy"]).notna().sum() == 0:
        raise NoData("no per-hospital accuracy recorded")
    h = hosp.assign(_v=_finite(hosp["accuracy"])).dropna(subset=["_v"])
    panel_keys, box_keys = split_keys(keys, h, max_lines=4)
    h = h.assign(_panel=h.apply(lambda x: label_of(x, panel_keys), axis=1) if panel_keys else "all runs",
                 _box=h.apply(lambda x: label_of(x, box_keys, "\n"), axis=1) if box_keys else "all runs")
    panels = _order(h["_panel"])
    nbox = h.groupby("_panel")["_box"].nunique().max()
    fig, axes = _grid(len(panels), max(3.2, 1.25 * nbox + 1.0), 3.3, max_cols=2)
    plotted = Plotted("")
    colors = colors_for(_order(h["_box"]))
    for ax, p in zip(axes, panels):
        sub = h[h["_panel"] == p]
        boxes = _order(sub["_box"])
        data = [sub.loc[sub["_box"] == b, "_v"].to_numpy() for b in boxes]
        bp = ax.boxplot(data, patch_artist=True, widths=0.55, showfliers=False,
                        medianprops={"color": "black", "lw": 1.4})
        for patch, b in zip(bp["boxes"], boxes):
            patch.set_facecolor(colors[b])
            patch.set_alpha(0.45)
        for i, (b, d) in enumerate(zip(boxes, data)):
            x = np.full(len(d), i + 1.0) + np.linspace(-0.16, 0.16, len(d)) if len(d) > 1 else np.array([i + 1.0])
            ax.plot(x, d, ".", color="black", ms=2.5, alpha=0.6)
            g = sub[sub["_box"] == b]
            plotted.add(p, b, b, g["run"], n=g["run"].nunique())
        ax.set_xticks(range(1, len(boxes) + 1),
                      [f"{b}\n(runs={sub.loc[sub['_box'] == b, 'run'].nunique()}, hosp.={len(d)})" for b, d in zip(boxes, data)],
                      fontsize=6.5)
        ref_vals = _reference_lines(ax, refs)
        _ylim(ax, [*sub["_v"]], ref_vals, min_span=0.3)
        if panel_keys:
            ax.set_title(p)
        ax.set_xlabel(" / ".join(short(k) for k in box_keys) or "configuration")
        ax.set_ylabel("honest hospital accuracy\n(own test split)")
    if refs:
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _tight(fig)
    plotted.caption = ("Accuracy of each honest hospital on its own test split (the cost to honest hospitals): one "
                       "box per configuration over all its runs' hospitals; each dot is one hospital in one run.")
    return save(fig, path, plotted)


def detection_rates(runs: pd.DataFrame, keys: list[str], path: Path) -> Plotted:
    """True / false positive rate of the exclusions per configuration (mean, 95% t-interval)."""
    if "detection_tpr" not in runs or _finite(runs["detection_tpr"]).notna().sum() == 0:
        raise NoData("no defense filtered clients (detection is only defined for filtering rules under attack)")
    r = runs[_finite(runs["detection_tpr"]).notna()]
    panel_keys, bar_keys = split_keys(keys, r, max_lines=8)
    r = r.assign(_panel=r.apply(lambda x: label_of(x, panel_keys), axis=1) if panel_keys else "all runs",
                 _x=r.apply(lambda x: label_of(x, bar_keys, "\n"), axis=1) if bar_keys else "all runs")
    panels = _order(r["_panel"])
    nx = r.groupby("_panel")["_x"].nunique().max()
    fig, axes = _grid(len(panels), max(3.4, 0.8 * nx + 1.8), 3.0)
    plotted = Plotted("")
    ns = []
    for ax, p in zip(axes, panels):
        sub = r[r["_panel"] == p]
        xs = _order(sub["_x"])
        x = np.arange(len(xs))
        for k, (col, c, lab) in enumerate([("detection_tpr", "#2a9d8f", "TPR (attackers excluded)"),
                                           ("detection_fpr", "#e76f51", "FPR (honest excluded)")]):
            s = summarise(sub, ["_x"], col).set_index("_x").reindex(xs)
            err = np.vstack([(s["mean"] - s["lo"]).fillna(0), (s["hi"] - s["mean"]).fillna(0)])
            ax.bar(x + (k - 0.5) * 0.38, s["mean"].fillna(0), 0.38, yerr=err, color=c, label=lab, capsize=2)
            for xv in xs:
                if isinstance(s.at[xv, "runs"], list):
                    plotted.add(p, lab, xv, s.at[xv, "runs"])
                    ns.append(s.at[xv, "n"])
        ax.set_xticks(x, [f"{v}\n(n={sub.loc[sub['_x'] == v, 'run'].nunique()})" for v in xs],
                      rotation=0 if len(xs) <= 3 else 30, ha="center" if len(xs) <= 3 else "right", fontsize=6.5)
        ax.set_ylim(0, 1.05)
        ax.set_title(p)
        ax.set_xlabel(" / ".join(short(k) for k in bar_keys) or "configuration")
        ax.set_ylabel("share of decisions")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _tight(fig)
    plotted.caption = ("Detection: share of (client, round) decisions the defense excluded, attackers (TPR) and "
                       f"honest hospitals (FPR); whiskers: {_n_note(ns)}.")
    return save(fig, path, plotted)


def seed_spread(groups: pd.DataFrame, path: Path, refs: dict[str, float] | None = None,
                label: str = "clean accuracy") -> Plotted:
    """``groups``: one row per configuration with label, n, mean, lo, hi, runs."""
    g = groups[groups["n"] > 0]
    if g.empty:
        raise NoData("no complete run")
    g = g.sort_values("mean")
    fig, ax = plt.subplots(figsize=(6.2, 0.28 * len(g) + 1.3))
    y = np.arange(len(g))
    err = np.vstack([(g["mean"] - g["lo"]).fillna(0), (g["hi"] - g["mean"]).fillna(0)])
    few = (g["n"] < 3).to_numpy()
    ax.errorbar(g["mean"][~few], y[~few], xerr=err[:, ~few], fmt="o", ms=3.5, capsize=2.5, color="#264653",
                label="n >= 3")
    if few.any():
        ax.errorbar(g["mean"][few], y[few], xerr=err[:, few], fmt="o", ms=3.5, capsize=2.5, color="#e76f51",
                    mfc="white", label="n < 3 (interval wide or none)")
    ax.set_yticks(y, [f"{lab} (n={n})" for lab, n in zip(g["label"], g["n"])], fontsize=6.5)
    ax.set_xlabel(f"{label} (mean and 95% t-interval over seeds)")
    ax.set_ylabel("configuration")
    ref_vals = []
    for name, v in (refs or {}).items():
        if v is not None and np.isfinite(v):
            ax.axvline(v, color="black", ls=":", lw=0.9, alpha=0.7, label=f"{name} ({v:.2f})")
            ref_vals.append(v)
    vals = [*g["mean"], *g["lo"].dropna(), *g["hi"].dropna(), *ref_vals]
    lo, hi = min(vals), max(vals)
    span = max(hi - lo, 0.2)
    ax.set_xlim(max(0.0, lo - 0.05 * span), min(1.0, lo + 1.05 * span) if lo + span <= 1 else 1.0)
    ax.set_title("Mean and 95% interval over seeds per configuration")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    plotted = Plotted("")
    for _, row in g.iterrows():
        plotted.add("", row["label"], row["label"], row["runs"])
    _tight(fig)
    plotted.caption = (f"{label.capitalize()} per configuration: mean and 95% t-interval over seeds; "
                       "open markers: fewer than 3 seeds.")
    return save(fig, path, plotted)


def threat_matrix(impact: pd.DataFrame, kinds: pd.DataFrame, path: Path) -> Plotted:
    """``impact``: threats (rows) × defenses (columns) in [0, 1] (accuracy drop or attack
    success); ``kinds`` the same shape with 'ASR' / 'drop' labels."""
    if impact.empty or impact.isna().all().all():
        raise NoData("no attacked runs with a matching baseline")
    fig, ax = plt.subplots(figsize=(1.5 * impact.shape[1] + 2.8, 0.65 * impact.shape[0] + 1.5))
    vals = impact.to_numpy(dtype=float)
    im = ax.imshow(np.clip(vals, 0, 1), cmap="Reds", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(impact.shape[1]), impact.columns, rotation=30, ha="right")
    ax.set_yticks(range(impact.shape[0]), impact.index)
    ax.grid(False)
    plotted = Plotted("")
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            v, k = vals[i, j], kinds.iat[i, j]
            text = impact.attrs.get("text")
            if np.isnan(v):
                txt = "not run"
            elif text is not None:
                txt = str(text.iat[i, j]).replace(" (", "\n(").replace("accuracy ", "accuracy\n").replace("ASR ", "ASR\n", 1) \
                    if k != "lift" else str(text.iat[i, j]).replace(" (", "\n(")
            else:
                txt = f"accuracy\n{-v:+.2f}" if k == "drop" else f"ASR\n{v:.2f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=6.5,
                    color="white" if not np.isnan(v) and v > 0.55 else "black")
            if not np.isnan(v):
                plotted.add("", str(impact.index[i]), str(impact.columns[j]), [])
    ax.set_xlabel("defense")
    ax.set_ylabel("threat (attack)")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03, label="impact (0 = none, 1 = total)")
    ax.set_title("Risk matrix: measured impact of each threat under each defense")
    _tight(fig)
    plotted.caption = ("Impact of each threat (rows) under each defense (columns): for targeted attacks the lift of "
                       "the attack success rate over the clean twin (or the ASR where no twin was recorded), else the "
                       "clean-accuracy drop against the no-attack runs of the same defense; colour: the impact, 0 to 1.")
    return save(fig, path, plotted)


# --------------------------------------------------------------------------- single run


def run_rounds(rounds: pd.DataFrame, path: Path, refs: dict[str, float] | None = None) -> Plotted:
    """One run's rounds.csv: accuracy, clinical metrics and attack success by round."""
    if rounds is None or rounds.empty or "round" not in rounds:
        raise NoData("rounds.csv is missing or empty")
    fig, ax = plt.subplots(figsize=(7.0, 3.2))
    plotted = Plotted("")
    ys = []
    for col, lab, style in [("clean_accuracy", "clean accuracy (server test set)", "-o"),
                            ("balanced_accuracy", "balanced accuracy", "-"),
                            ("auroc", "AUROC", "-."),
                            ("mean_hospital_accuracy", "mean hospital accuracy", "-"),
                            ("worst_hospital_accuracy", "worst hospital accuracy", "--"),
                            ("worst_honest_hospital_accuracy", "worst honest hospital accuracy", ":"),
                            ("attack_success_rate", "attack success rate", "-s"),
                            ("attack_success_rate_clean", "attack success on the clean twin", "--s")]:
        if col in rounds and _finite(rounds[col]).notna().any():
            y = _finite(rounds[col])
            ax.plot(rounds["round"], y, style, ms=2.5, lw=1.1, label=lab)
            ys += list(y.dropna())
            plotted.add("", lab, "rounds", ["this run"])
    ref_vals = _reference_lines(ax, refs)
    _ylim(ax, ys, ref_vals)
    ax.set_xlabel("round")
    ax.set_ylabel("metric value")
    _int_x(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Metrics by round")
    _tight(fig)
    plotted.caption = ("Accuracy, clinical metrics and attack success (when the attack has a target) by round"
                       + (f"; dotted: {', '.join(refs)}" if refs else "") + ".")
    return save(fig, path, plotted)


def run_hospitals(per: pd.DataFrame, path: Path, refs: dict[str, float] | None = None) -> Plotted:
    """``per``: hospital, accuracy, malicious (bool), n (test records) for one run."""
    if per is None or per.empty or _finite(per["accuracy"]).notna().sum() == 0:
        raise NoData("no per-hospital accuracy in summary.json")
    fig, ax = plt.subplots(figsize=(max(4.5, 0.42 * len(per) + 1.6), 3.0))
    colors = ["#e63946" if m else "#457b9d" for m in per["malicious"]]
    x = np.arange(len(per))
    ax.bar(x, _finite(per["accuracy"]).fillna(0), color=colors)
    sep = " " if len(per) > 6 else "\n"
    names = [f"{h}{sep}(n={int(n)})" if "n" in per and pd.notna(n) else str(h)
             for h, n in zip(per["hospital"], per.get("n", [None] * len(per)))]
    ax.set_xticks(x, names, rotation=45 if len(per) > 6 else 0, ha="right" if len(per) > 6 else "center", fontsize=6.5)
    _reference_lines(ax, refs)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("hospital (red: malicious; n: its test records)")
    ax.set_ylabel("accuracy on own test split")
    ax.set_title("Final accuracy per hospital")
    if refs:
        ax.legend(loc="lower left", frameon=False)
    _tight(fig)
    plotted = Plotted("Final accuracy of the global model on each hospital's own test split (red: malicious hospitals)"
                      + (f"; dotted: {', '.join(refs)}" if refs else "") + ".")
    return save(fig, path, plotted)


def run_update_norms(clients: pd.DataFrame, path: Path) -> Plotted:
    """One run's clients.csv: update norm per client per round (each hospital at the same
    offset in every round), attackers in red, excluded updates circled."""
    if clients is None or clients.empty or "update_norm" not in clients:
        raise NoData("clients.csv is missing or has no update norms")
    c = clients.assign(norm=_finite(clients["update_norm"])).dropna(subset=["norm"])
    if c.empty:
        raise NoData("no update norms recorded (centralized run?)")
    fig, ax = plt.subplots(figsize=(7.0, 3.0))
    ids = sorted(c["partition_id"].unique()) if "partition_id" in c else [0]
    offset = {h: (i - (len(ids) - 1) / 2) * (0.5 / max(len(ids), 1)) for i, h in enumerate(ids)}
    x = c["round"].to_numpy(dtype=float) + (c["partition_id"].map(offset).to_numpy(dtype=float)
                                            if "partition_id" in c else 0.0)
    flag = c.get("attacking", c.get("malicious", pd.Series(False, index=c.index)))
    mal = flag.map(lambda v: str(v).strip().lower() in ("1", "true", "1.0")).to_numpy()
    ax.scatter(x[~mal], c["norm"][~mal], s=9, color="#457b9d", label="honest")
    if mal.any():
        ax.scatter(x[mal], c["norm"][mal], s=13, color="#e63946", label="attacking")
    if "accepted" in c:
        rej = c["accepted"].map(lambda v: str(v).strip().lower() in ("0", "false", "0.0")).to_numpy()
        if rej.any():
            ax.scatter(x[rej], c["norm"][rej], s=55, facecolors="none", edgecolors="black", lw=0.8,
                       label="excluded by the defense")
    if c["norm"].max() / max(c["norm"].min(), 1e-12) > 100:
        ax.set_yscale("log")
    _int_x(ax)
    ax.set_xlabel("round (hospitals side by side, same order every round)")
    ax.set_ylabel("update L2 norm")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Client update norms by round")
    _tight(fig)
    plotted = Plotted("L2 norm of each client's update per round; circled updates were excluded by the defense.")
    return save(fig, path, plotted)
