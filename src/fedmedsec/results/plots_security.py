"""Security figures: robust accuracy against the evasion budget, adversarial examples, and
the durability of a backdoor round by round.

Every plot takes tidy pandas frames in which **columns whose name contains a dot are
resolved config keys** (``defense.name``, ``train.adversarial``, ``experiment.seed``) and
the other columns are measurements (``eps``, ``robust_accuracy``, ``round``, ...). Runs are
never pooled across configurations: within a panel, every config key that takes more than
one value (``experiment.seed``, the replicate, excepted) splits the series, and whatever the
caller does not put on lines goes to panels. A series' point is the mean over its seeds with
the 95% t-interval of the mean (none for one seed; the legend gives n, and the figure warns
when n < 3). Figures are written as PNG at 300 dpi and as PDF, every axis and colour bar
labelled; each function returns a :class:`FigureInfo` with the files, the caption, the
series actually drawn (their configuration, runs and values) and the axes' labels, so that
a report (or a test) can check what was plotted.

Loaders (``load_runs``, ``evasion_frame``, ``rounds_frame``) read sweep or run directories
into those frames; ``examples_from_run`` rebuilds a finished run's model, input domain and
test records for :func:`draw_adversarial_examples`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = [
    "REPLICATE_KEYS", "FigureInfo", "Series", "NoData", "config_keys", "varying_keys", "split_keys",
    "mean_ci", "load_runs", "evasion_frame", "rounds_frame",
    "plot_robust_accuracy", "AdversarialExamples", "adversarial_examples", "plot_adversarial_examples",
    "draw_adversarial_examples", "examples_from_run", "flips_first", "plot_durability",
]

#: config keys that replicate a configuration (averaged over, never a series of their own)
REPLICATE_KEYS = ("experiment.seed",)
DPI = 300
COLORS = plt.get_cmap("tab10").colors
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_STYLE = {"font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "legend.fontsize": 6.5,
          "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3}


class NoData(Exception):
    """Nothing to plot; ``str(e)`` says what is missing."""


@dataclass(frozen=True)
class Series:
    """One drawn series: its panel, its label, the configuration it stands for (every config
    key that varies in its panel -> value), the runs averaged, and the values drawn:
    x, mean, CI low / high (NaN without an interval) and n per point."""

    panel: str
    label: str
    config: dict
    runs: tuple[str, ...]
    x: tuple[float, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n: tuple[int, ...]
    metric: str = ""


@dataclass
class FigureInfo:
    """What a plot function wrote: ``png`` (300 dpi) and ``pdf``, the caption, the series
    drawn, per axes (title, x label, y label) as set on the figure, and warnings (n < 3)."""

    png: Path
    pdf: Path
    caption: str
    series: list[Series] = field(default_factory=list)
    axes: list[tuple[str, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    shaded: list[tuple[str, float, float]] = field(default_factory=list)  # (panel, from, to)


# --------------------------------------------------------------------------- grouping


def config_keys(df: pd.DataFrame) -> list[str]:
    """The columns that are resolved config keys (their name contains a dot)."""
    return [c for c in df.columns if "." in str(c)]


def _hashable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, sort_keys=True, default=str)
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def _normalised(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose config columns hold hashable values (lists as JSON text, NaN as None)."""
    out = df.copy()
    for c in config_keys(out):
        out[c] = pd.Series([_hashable(v) for v in out[c]], index=out.index, dtype=object)
    return out


def varying_keys(df: pd.DataFrame, exclude: Sequence[str] = REPLICATE_KEYS) -> list[str]:
    """Config keys with more than one distinct value in ``df`` (a missing value counts as
    one), in column order, ``exclude`` left out."""
    d = _normalised(df)
    return [c for c in config_keys(d) if c not in exclude
            and len({_hashable(v) for v in d[c]}) > 1]


def _determined(d: pd.DataFrame, key: str, by: Sequence[str]) -> bool:
    """Does ``by`` fix ``key`` (one value of ``key`` per combination of ``by``)? ``d``
    normalised."""
    if not by:
        return len(set(d[key])) <= 1
    seen: dict[tuple, Any] = {}
    for combo, v in zip(zip(*(d[k].tolist() for k in by)), d[key].tolist()):
        if seen.setdefault(combo, v) != v:
            return False
    return True


def split_keys(df: pd.DataFrame, lines: Sequence[str] | None = None,
               panels: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(line keys, panel keys) over the keys that vary in ``df``.

    With ``lines``: those that vary are the line keys, and every other varying key is a
    panel key unless the keys chosen so far already fix it (``attack.top_k_ratio`` is fixed
    by ``attack.name``: it splits nothing further). With only ``panels``: the reverse. The
    groups of (line keys + panel keys) are therefore the groups of every varying key: no
    varying key is averaged over."""
    vary = varying_keys(df)
    d = _normalised(df)
    first = [k for k in (lines if lines is not None else (panels or ())) if k in vary]
    other: list[str] = []
    for k in vary:
        if k not in first and not _determined(d, k, first + other):
            other.append(k)
    return (first, other) if lines is not None else (other, first)


def _line_keys_in(panel: pd.DataFrame, line_keys: Sequence[str], panel_keys: Sequence[str]) -> list[str]:
    """The line keys that vary within one panel, plus any other key that varies there and
    is not fixed by them (none when ``split_keys`` made the keys)."""
    vary = [k for k in varying_keys(panel) if k not in panel_keys]
    lk = [k for k in line_keys if k in vary]
    d = _normalised(panel)
    for k in vary:
        if k not in lk and not _determined(d, k, lk):
            lk.append(k)
    return lk


def mean_ci(values: Sequence[float]) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values: the 95% t-interval of the mean
    (mean -+ t_{0.975, n-1} s / sqrt(n)); low = high = NaN when n < 2."""
    from scipy.stats import t

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = int(v.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if n < 2:
        return m, math.nan, math.nan, 1
    h = float(t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return m, m - h, m + h, n


def _short(key: str, keys: Sequence[str] = ()) -> str:
    """``defense.name`` -> ``defense``, ``train.adversarial`` -> ``adversarial``; the full key
    when another of ``keys`` would shorten to the same text."""
    def cut(k: str) -> str:
        sec, _, rest = k.partition(".")
        return sec if rest == "name" else rest or sec
    s = cut(key)
    return key if sum(cut(k) == s for k in keys) > 1 else s


def _label(config: dict, keys: Sequence[str]) -> str:
    parts = []
    for k in keys:
        v = config.get(k)
        if v is None:
            continue
        parts.append(f"{_short(k, keys)}={_fmt_value(v)}")
    return ", ".join(parts) or "all runs"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _groups(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict, pd.DataFrame]]:
    """(config of the group, rows) per distinct value combination of ``keys`` (missing
    values as None), in a stable order."""
    if not keys:
        return [({}, df)]
    d = _normalised(df)
    combos: dict[tuple, list] = {}
    for idx, combo in zip(df.index, zip(*(d[k].tolist() for k in keys))):
        combos.setdefault(combo, []).append(idx)

    def order(t):
        return tuple((v is None, str(v)) for v in t)
    return [(dict(zip(keys, combo)), df.loc[combos[combo]]) for combo in sorted(combos, key=order)]


def _full_config(g: pd.DataFrame) -> dict:
    """Every config key (replicates excepted) that is constant over ``g`` -> its value."""
    d = _normalised(g)
    out = {}
    for k in config_keys(d):
        if k in REPLICATE_KEYS:
            continue
        vals = set(d[k])
        if len(vals) == 1:
            out[k] = next(iter(vals))
    return out


def _styles(configs: list[dict], keys: Sequence[str]) -> list[dict]:
    """Colour by the first line key, line style by the second, marker by the third."""
    values = [sorted({str(c.get(k)) for c in configs}) for k in keys]
    out = []
    for i, c in enumerate(configs):
        st: dict[str, Any] = {"color": COLORS[i % len(COLORS)], "linestyle": "-", "marker": "o"}
        if keys:
            st["color"] = COLORS[values[0].index(str(c.get(keys[0]))) % len(COLORS)]
        if len(keys) > 1:
            st["linestyle"] = LINESTYLES[values[1].index(str(c.get(keys[1]))) % len(LINESTYLES)]
        if len(keys) > 2:
            st["marker"] = MARKERS[values[2].index(str(c.get(keys[2]))) % len(MARKERS)]
        if len(keys) <= 1:  # distinct colours are enough; keep markers varied for print
            st["marker"] = MARKERS[i % len(MARKERS)]
        out.append(st)
    return out


def _subplots(n_panels: int, rows_per_panel: int = 1, width: float = 3.4, height: float = 2.6,
              max_cols: int = 3):
    cols = min(max(n_panels, 1), max_cols)
    prow = math.ceil(max(n_panels, 1) / cols)
    fig, axes = plt.subplots(prow * rows_per_panel, cols, figsize=(width * cols, height * prow * rows_per_panel + 1.0),
                             squeeze=False, layout="constrained")
    panels = []
    for p in range(n_panels):
        r, c = divmod(p, cols)
        panels.append([axes[r * rows_per_panel + k][c] for k in range(rows_per_panel)])
    used = {id(a) for group in panels for a in group}
    for a in axes.flat:
        if id(a) not in used:
            a.set_visible(False)
    return fig, panels


def _save(fig, path: str | Path) -> tuple[Path, Path, list[tuple[str, str, str]]]:
    """Write ``path`` as PNG (300 dpi) and PDF; returns both paths and the visible axes'
    (title, x label, y label) as they are on the figure."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = p.with_suffix(".png"), p.with_suffix(".pdf")
    axes = [(a.get_title(), a.get_xlabel(), a.get_ylabel()) for a in fig.axes if a.get_visible()]
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight")
    plt.close(fig)
    return png, pdf, axes


def _seed_note(series: list[Series]) -> list[str]:
    low = sorted({min(s.n) for s in series if s.n and min(s.n) < 3})
    if not low:
        return []
    return [f"some points average fewer than 3 seeds (n = {', '.join(map(str, low))}): "
            "their 95% intervals are wide or absent"]


# --------------------------------------------------------------------------- loaders


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _run_dirs(root: Path) -> list[Path]:
    if (root / "summary.json").is_file() and (root / "config.toml").is_file():
        return [root]
    return sorted(d for d in root.iterdir()
                  if d.is_dir() and (d / "summary.json").is_file() and (d / "config.toml").is_file())


def load_runs(*roots: str | Path) -> pd.DataFrame:
    """One row per finished run (a directory with summary.json and config.toml) under each
    root (a sweep directory or a run directory): ``run`` (the directory name, prefixed by its
    root's name when several roots are given), ``path``, every resolved config key as a
    dotted column (lists as JSON text), and the summary as ``summary`` (a dict, for the
    frames below)."""
    rows = []
    for root in map(Path, roots):
        for d in _run_dirs(root):
            try:
                summary = json.loads((d / "summary.json").read_text())
                cfg = _flat(tomllib.loads((d / "config.toml").read_text()))
            except (OSError, ValueError):
                continue
            name = d.name if len(roots) == 1 else f"{root.name}/{d.name}"
            rows.append({"run": name, "path": str(d), **{k: _hashable(v) for k, v in cfg.items()},
                         "summary": summary})
    if not rows:
        raise NoData(f"no finished run under {', '.join(map(str, roots))}")
    return pd.DataFrame(rows)


_EVASION_COLUMNS = ("attack", "norm", "eps", "steps", "targeted", "target_label", "positive_label", "n",
                    "clean_accuracy", "robust_accuracy", "sensitivity_clean", "sensitivity_robust",
                    "targeted_success_rate", "clean_target_rate", "detection_rate",
                    "detector_false_positive_rate", "detection_auc")


def evasion_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, evasion attack, eps) from summary.json's ``evasion.rows`` (the
    server's rows, else the hospitals' combined), with the run's config columns. ``attack``
    is ``worst_case`` for the per-record worst over the attacks run; ``worst`` marks the
    rows a robustness figure uses (the worst case, or the only attack)."""
    cfg_cols = config_keys(runs)
    rows = []
    for _, r in runs.iterrows():
        ev = (r["summary"] or {}).get("evasion") or {}
        ev_rows = ev.get("rows") or []
        names = {x.get("attack") for x in ev_rows}
        worst = "worst_case" if "worst_case" in names else (next(iter(names)) if len(names) == 1 else None)
        for x in ev_rows:
            row = {"run": r["run"], **{c: r[c] for c in cfg_cols}}
            row.update({c: x.get(c) for c in _EVASION_COLUMNS})
            row["worst"] = x.get("attack") == worst
            rows.append(row)
    if not rows:
        raise NoData("no run has evasion rows (summary.json evasion is null: set evasion.eps)")
    out = pd.DataFrame(rows)
    for c in _EVASION_COLUMNS[7:] + ("eps",):
        out[c] = pd.to_numeric(out[c], errors="coerce")
    return out


def rounds_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """rounds.csv of every run (one row per run and round) with the run's config columns
    and ``attack_rounds`` (the rounds the attack was scheduled, comma-joined, from
    summary.json)."""
    cfg_cols = config_keys(runs)
    frames = []
    for _, r in runs.iterrows():
        p = Path(r["path"]) / "rounds.csv"
        if not p.is_file():
            continue
        t = pd.read_csv(p)
        window = ",".join(str(int(x)) for x in (r["summary"] or {}).get("attack_rounds") or [])
        extra = {"run": r["run"], "attack_rounds": window, **{c: r[c] for c in cfg_cols}}
        frames.append(t.assign(**{k: [v] * len(t) for k, v in extra.items()}))
    if not frames:
        raise NoData("no rounds.csv")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- (a) robust accuracy


def _eps_label(eps: float, modality_image: bool) -> str:
    if modality_image and eps > 0:
        k = eps * 255
        if abs(k - round(k)) < 1e-6:
            return f"{int(round(k))}/255"
    return f"{eps:g}"


def plot_robust_accuracy(
    ev: pd.DataFrame, path: str | Path, *, metric: str = "robust_accuracy", lines: Sequence[str] | None = None,
    panels: Sequence[str] | None = ("data.name",), include_clean: bool = True,
    chance: float | dict | None = None, ylabel: str | None = None, title: str | None = None,
) -> FigureInfo:
    """Robust accuracy (or ``metric``: sensitivity_robust, targeted_success_rate,
    detection_rate) against eps, one line per configuration with the 95% t-interval over
    seeds as error bars.

    ``ev``: :func:`evasion_frame` rows (only ``worst`` rows are used: the per-record worst
    case over the attacks run). Panels split by ``panels`` (default the dataset), lines by
    every other varying key (``lines`` to choose them; then the rest goes to panels).
    ``include_clean``: robust accuracy also at eps = 0, the clean accuracy on the same
    records. ``chance``: a dashed reference line (a number, or {data.name value: number},
    e.g. the majority rate). The y axis spans [0, 1]."""
    if ev.empty or metric not in ev:
        raise NoData(f"no {metric} rows")
    d = ev[ev["worst"].astype(bool)] if "worst" in ev else ev
    d = d[pd.to_numeric(d[metric], errors="coerce").notna()]
    if d.empty:
        raise NoData(f"no finite {metric}")
    line_keys, panel_keys = split_keys(d, lines, panels)
    plt.rcParams.update(_STYLE)
    panel_groups = _groups(d, panel_keys)
    fig, axes = _subplots(len(panel_groups), width=4.0, height=3.6)
    series: list[Series] = []
    for (pconf, pdf_), (ax,) in zip(panel_groups, axes):
        lk = _line_keys_in(pdf_, line_keys, panel_keys)
        groups = _groups(pdf_, lk)
        styles = _styles([c for c, _ in groups], lk)
        image = str(pdf_.get("data.name", pd.Series(["?"])).iloc[0]) == "medmnist"
        eps_all: set[float] = set()
        for (conf, g), st in zip(groups, styles):
            per_eps: dict[float, list[float]] = {}
            for e, ge in g.groupby("eps"):
                per_eps[float(e)] = ge[metric].astype(float).tolist()
            if include_clean and metric == "robust_accuracy":
                per_eps[0.0] = g.drop_duplicates("run")["clean_accuracy"].astype(float).tolist()
            xs = sorted(per_eps)
            stats = [mean_ci(per_eps[x]) for x in xs]
            m = np.array([s[0] for s in stats])
            lo = np.array([s[1] for s in stats])
            hi = np.array([s[2] for s in stats])
            ns = [s[3] for s in stats]
            label = f"{_label(conf, lk)} (n={min(ns)})"
            err = np.vstack([np.where(np.isnan(lo), 0, m - lo), np.where(np.isnan(hi), 0, hi - m)])
            ax.errorbar(xs, m, yerr=err, capsize=2.5, lw=1.2, ms=3.5, label=label, **st)
            eps_all.update(xs)
            series.append(Series(panel=_label(pconf, panel_keys), label=label, config=_full_config(g),
                                 runs=tuple(sorted(g["run"].unique())), x=tuple(xs), mean=tuple(m),
                                 low=tuple(lo), high=tuple(hi), n=tuple(ns), metric=metric))
        ch = chance.get(pconf.get("data.name")) if isinstance(chance, dict) else chance
        if ch is not None:
            ax.axhline(float(ch), color="grey", ls="--", lw=0.8, label=f"chance / majority ({float(ch):.3f})")
        ticks = sorted(eps_all)
        ax.set_xticks(ticks, [_eps_label(t, image) for t in ticks], rotation=0)
        ax.set_ylim(0.0, 1.02)
        norm = str(pdf_["evasion.norm"].iloc[0]) if "evasion.norm" in pdf_ else "linf"
        unit = "pixels in [0, 1]" if image else "standardised units"
        ax.set_xlabel(f"eps ({'L-inf' if norm == 'linf' else 'L2'}, {unit})")
        ax.set_ylabel(ylabel or metric.replace("_", " "))
        ax.set_title(_label(pconf, panel_keys) if panel_keys else (title or ""))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncol=1)
    warn = _seed_note(series)
    sup = title or f"{(ylabel or metric).replace('_', ' ').capitalize()} against eps (mean over seeds, 95% t-interval)"
    fig.suptitle(sup + ("\n" + warn[0] if warn else ""), fontsize=8.5)
    png, pdf, ax_info = _save(fig, path)
    cap = (f"{sup}. Worst case per record over the evasion attacks run; one line per "
           f"{', '.join(_short(k, line_keys) for k in line_keys) or 'configuration'}"
           f"{'; one panel per ' + ', '.join(_short(k, panel_keys) for k in panel_keys) if panel_keys else ''}"
           "; n = seeds per point.")
    return FigureInfo(png, pdf, cap, series, ax_info, warn)


# --------------------------------------------------------------------------- (b) examples


@dataclass(frozen=True)
class AdversarialExamples:
    """Clean records and their adversarial versions (numpy): x, x_adv [N, *input_shape],
    y [N], predictions and the softmax probability of the predicted class, before and after;
    the attack's settings and the modality."""

    x: np.ndarray
    x_adv: np.ndarray
    y: np.ndarray
    pred_clean: np.ndarray
    pred_adv: np.ndarray
    prob_clean: np.ndarray
    prob_adv: np.ndarray
    attack: str
    eps: float
    norm: str
    modality: str
    targeted_label: int | None = None


def adversarial_examples(
    model, domain, x, y, *, eps: float, attack: str = "pgd", norm: str = "linf", steps: int = 10,
    targeted_label: int | None = None, generator=None, seed: int = 0,
) -> AdversarialExamples:
    """Attack ``model`` on (x [N, *input_shape], y [N]) with ``fedmedsec.evasion.run_attack``
    inside ``domain`` (``setup.input_domain``); random starts from ``generator`` (default
    a torch.Generator seeded with ``seed``). The model is left as it was."""
    import torch

    from ..evasion.attacks import attack_mode, run_attack

    x0 = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    y0 = torch.as_tensor(np.asarray(y), dtype=torch.long).reshape(-1)
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed))
    xa = run_attack(attack, model, x0, y0, eps=float(eps), domain=domain, norm=norm, steps=steps,
                    targeted_label=targeted_label, generator=g)
    with torch.no_grad(), attack_mode(model):
        pc = torch.softmax(model(x0), 1)
        pa = torch.softmax(model(xa), 1)
    return AdversarialExamples(
        x=x0.numpy(), x_adv=xa.detach().numpy(), y=y0.numpy(),
        pred_clean=pc.argmax(1).numpy(), pred_adv=pa.argmax(1).numpy(),
        prob_clean=pc.max(1).values.numpy(), prob_adv=pa.max(1).values.numpy(),
        attack=attack, eps=float(eps), norm=norm, modality=domain.modality, targeted_label=targeted_label)


def flips_first(ex: AdversarialExamples, n: int) -> AdversarialExamples:
    """The ``n`` records of ``ex`` to show: those whose prediction the attack changed first
    (one per true class, then in order), then the others, so a figure shows what the attack
    does when it succeeds on any record. Order within the result follows ``ex``."""
    flipped = ex.pred_adv != ex.pred_clean
    chosen: list[int] = []
    for c in sorted(set(ex.y[flipped].tolist())):
        chosen.append(int(np.flatnonzero(flipped & (ex.y == c))[0]))
    chosen += [int(i) for i in np.flatnonzero(flipped) if int(i) not in chosen]
    chosen += [int(i) for i in np.flatnonzero(~flipped)]
    idx = np.array(sorted(chosen[:n]), dtype=int)
    return dataclasses.replace(ex, x=ex.x[idx], x_adv=ex.x_adv[idx], y=ex.y[idx], pred_clean=ex.pred_clean[idx],
                               pred_adv=ex.pred_adv[idx], prob_clean=ex.prob_clean[idx],
                               prob_adv=ex.prob_adv[idx])


def _cls(names, c: int) -> str:
    return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)


def plot_adversarial_examples(ex: AdversarialExamples, path: str | Path, *, class_names=None,
                              sampling_rate: float | None = None, title: str | None = None) -> FigureInfo:
    """One row per record. Images: clean | adversarial | difference (x_adv - x, diverging
    colour map centred at 0, labelled colour bar). ECG and tabular: the clean and the
    adversarial trace overlaid | the difference (first lead; time in s when
    ``sampling_rate`` is given, else samples). Titles give the true label and each
    prediction with its probability."""
    n = len(ex.y)
    if n == 0:
        raise NoData("no records")
    plt.rcParams.update(_STYLE)
    eps_txt = _eps_label(ex.eps, ex.modality == "image")
    atk = f"{ex.attack.upper()} {'L-inf' if ex.norm == 'linf' else 'L2'} eps={eps_txt}"
    series = []
    if ex.modality == "image":
        fig, axs = plt.subplots(n, 3, figsize=(7.6, 2.4 * n + 0.5), squeeze=False, layout="constrained")
        lim = float(np.abs(ex.x_adv - ex.x).max()) or 1.0
        for i in range(n):
            a, b = ex.x[i], ex.x_adv[i]
            img = (lambda t: t[0] if t.shape[0] == 1 else np.moveaxis(t, 0, -1))
            cmap = "gray" if a.shape[0] == 1 else None
            axs[i][0].imshow(img(a), cmap=cmap, vmin=0, vmax=1)
            axs[i][0].set_title(f"clean: true {_cls(class_names, int(ex.y[i]))}, "
                                f"pred {_cls(class_names, int(ex.pred_clean[i]))} ({ex.prob_clean[i]:.2f})")
            axs[i][1].imshow(img(b), cmap=cmap, vmin=0, vmax=1)
            axs[i][1].set_title(f"adversarial: pred {_cls(class_names, int(ex.pred_adv[i]))} ({ex.prob_adv[i]:.2f})")
            diff = (b - a).mean(0)
            im = axs[i][2].imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim)
            axs[i][2].set_title("difference x_adv - x")
            cb = fig.colorbar(im, ax=axs[i][2], fraction=0.046, pad=0.04)
            cb.set_label("x_adv - x (pixel value)")
            for ax in axs[i]:
                ax.set_xlabel("column (pixel)")
                ax.set_ylabel("row (pixel)")
                ax.grid(False)
            series.append(Series("", f"record {i}", {}, (), (), (float(np.abs(b - a).max()),), (), (), (1,)))
    else:
        fig, axs = plt.subplots(n, 2, figsize=(9.0, 2.1 * n + 0.5), squeeze=False, layout="constrained")
        for i in range(n):
            a = ex.x[i].reshape(ex.x[i].shape[0], -1)[0] if ex.x[i].ndim > 1 else ex.x[i]
            b = ex.x_adv[i].reshape(ex.x_adv[i].shape[0], -1)[0] if ex.x_adv[i].ndim > 1 else ex.x_adv[i]
            t = np.arange(a.size) / sampling_rate if sampling_rate else np.arange(a.size)
            unit = "time (s)" if sampling_rate else ("sample" if ex.modality == "ecg" else "feature index")
            axs[i][0].plot(t, a, lw=0.8, color="black", label="clean")
            axs[i][0].plot(t, b, lw=0.8, color="tab:red", alpha=0.8, label="adversarial")
            axs[i][0].set_title(f"true {_cls(class_names, int(ex.y[i]))}: clean pred "
                                f"{_cls(class_names, int(ex.pred_clean[i]))} ({ex.prob_clean[i]:.2f}), adversarial "
                                f"{_cls(class_names, int(ex.pred_adv[i]))} ({ex.prob_adv[i]:.2f})")
            axs[i][0].legend(loc="upper right", frameon=False)
            axs[i][1].plot(t, b - a, lw=0.8, color="tab:blue")
            axs[i][1].axhline(ex.eps, color="grey", ls=":", lw=0.7)
            axs[i][1].axhline(-ex.eps, color="grey", ls=":", lw=0.7)
            axs[i][1].set_title("difference x_adv - x (dotted: -+eps)")
            amp = "amplitude (standardised units)" if ex.modality == "ecg" else "value (standardised units)"
            for ax, yl in ((axs[i][0], amp), (axs[i][1], "x_adv - x")):
                ax.set_xlabel(unit)
                ax.set_ylabel(yl)
            series.append(Series("", f"record {i}", {}, (), (), (float(np.abs(b - a).max()),), (), (), (1,)))
    fig.suptitle(title or f"Adversarial examples: {atk}", fontsize=9)
    png, pdf, ax_info = _save(fig, path)
    flipped = int((ex.pred_adv != ex.pred_clean).sum())
    cap = f"{title or 'Adversarial examples'} ({atk}): {flipped} of {n} predictions changed."
    return FigureInfo(png, pdf, cap, series, ax_info, [])


def draw_adversarial_examples(model, domain, x, y, path: str | Path, *, eps: float, attack: str = "pgd",
                              norm: str = "linf", steps: int = 10, targeted_label: int | None = None,
                              seed: int = 0, class_names=None, sampling_rate: float | None = None,
                              title: str | None = None, show: int | None = None
                              ) -> tuple[AdversarialExamples, FigureInfo]:
    """:func:`adversarial_examples` then :func:`plot_adversarial_examples`; with ``show``, only
    that many records are drawn, those the attack flipped first (:func:`flips_first`)."""
    ex = adversarial_examples(model, domain, x, y, eps=eps, attack=attack, norm=norm, steps=steps,
                              targeted_label=targeted_label, seed=seed)
    if show is not None:
        ex = flips_first(ex, show)
    return ex, plot_adversarial_examples(ex, path, class_names=class_names, sampling_rate=sampling_rate,
                                         title=title)


def examples_from_run(run_dir: str | Path, n: int = 3) -> dict:
    """What :func:`draw_adversarial_examples` needs, from a finished run directory: its
    final model (``final_model.pt``), ``input_domain`` of its setup, ``n`` server test
    records the model classifies correctly (as many classes as possible, first in test
    order), ``class_names``, ``sampling_rate`` (ECG) and the run's ``evasion`` settings
    (eps list, norm, steps). Rebuilds the data from config.toml (data.path must resolve)."""
    import torch

    from ..config import config_from_dict
    from ..evasion.attacks import attack_mode
    from ..experiment import build_setup

    d = Path(run_dir)
    raw = tomllib.loads((d / "config.toml").read_text())
    # only the data and the model are rebuilt; a resolved in-process config is refused with
    # its Ray keys (simulation.num_cpus_per_client "does not apply"), so drop them
    raw["simulation"] = {"backend": "inprocess"}
    cfg = config_from_dict(raw)
    setup = build_setup(cfg)
    model = setup.new_model()
    model.load_state_dict(torch.load(d / "final_model.pt", weights_only=True))
    model.eval()
    data = setup.data
    x, y = np.asarray(data.x_test), np.asarray(data.y_test)
    with torch.no_grad(), attack_mode(model):
        pred = model(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    ok = np.flatnonzero(pred == y)
    chosen: list[int] = []
    for c in sorted(set(y[ok].tolist())):  # one per class first, then in test order
        chosen.append(int(ok[y[ok] == c][0]))
    chosen += [int(i) for i in ok if int(i) not in chosen]
    idx = np.array(sorted(chosen[:n]), dtype=int)
    rate = cfg.params("data").model_dump().get("sampling_rate") if data.modality == "ecg" else None
    return {"model": model, "domain": setup.input_domain, "x": x[idx], "y": y[idx],
            "class_names": data.class_names, "sampling_rate": rate,
            "eps": list(cfg.evasion.eps), "norm": cfg.evasion.norm, "steps": cfg.evasion.steps}


# --------------------------------------------------------------------------- (c) durability


def _spans(rounds: Sequence[int]) -> list[tuple[int, int]]:
    r = sorted(set(int(x) for x in rounds))
    out: list[tuple[int, int]] = []
    for x in r:
        if out and x == out[-1][1] + 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


def _per_round(g: pd.DataFrame, col: str) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray, list[int]]:
    xs, m, lo, hi, ns = [], [], [], [], []
    for r, gr in g.groupby("round"):
        s = mean_ci(pd.to_numeric(gr[col], errors="coerce").tolist())
        if s[3] == 0:
            continue
        xs.append(float(r))
        m.append(s[0])
        lo.append(s[1])
        hi.append(s[2])
        ns.append(s[3])
    return xs, np.array(m), np.array(lo), np.array(hi), ns


def plot_durability(rounds: pd.DataFrame, path: str | Path, *, lines: Sequence[str] | None = ("attack.name",),
                    panels: Sequence[str] | None = None, title: str | None = None) -> FigureInfo:
    """Backdoor durability per round: for each panel (a configuration apart from the line
    keys), the attack success rate (top; solid) with the clean twin's success rate of the
    same trigger (dashed, same colour), and the clean accuracy (bottom), one colour per line
    configuration (default: per attack), the mean over seeds with a 95% t-band; the rounds
    the attack was scheduled (``attack_rounds``) shaded.

    ``rounds``: :func:`rounds_frame` rows (round, clean_accuracy, attack_success_rate,
    attack_success_rate_clean, attack_rounds, config columns)."""
    if rounds.empty or "round" not in rounds:
        raise NoData("no per-round rows")
    line_keys, panel_keys = split_keys(rounds, lines, panels)
    plt.rcParams.update(_STYLE)
    pgroups = _groups(rounds, panel_keys)
    fig, axes = _subplots(len(pgroups), rows_per_panel=2, width=4.0, height=2.3)
    series: list[Series] = []
    shaded: list[tuple[str, float, float]] = []
    for (pconf, pd_), (ax_asr, ax_acc) in zip(pgroups, axes):
        lk = _line_keys_in(pd_, line_keys, panel_keys)
        groups = _groups(pd_, lk)
        styles = _styles([c for c, _ in groups], lk)
        window: set[int] = set()
        for w in pd_.get("attack_rounds", pd.Series(dtype=object)).dropna().unique():
            window.update(int(x) for x in str(w).split(",") if x.strip())
        for a, b in _spans(window):
            shaded.append((_label(pconf, panel_keys), a - 0.5, b + 0.5))
            for ax in (ax_asr, ax_acc):
                ax.axvspan(a - 0.5, b + 0.5, color="tab:red", alpha=0.10, lw=0)
        for (conf, g), st in zip(groups, styles):
            base = _label(conf, lk)
            for ax, col, ls, name in ((ax_asr, "attack_success_rate", "-", "ASR"),
                                      (ax_asr, "attack_success_rate_clean", "--", "clean twin ASR"),
                                      (ax_acc, "clean_accuracy", "-", "clean accuracy")):
                if col not in g or pd.to_numeric(g[col], errors="coerce").notna().sum() == 0:
                    continue
                xs, m, lo, hi, ns = _per_round(g, col)
                label = f"{base}: {name} (n={min(ns)})"
                ax.plot(xs, m, color=st["color"], ls=ls, lw=1.1, label=label)
                if np.isfinite(lo).any():
                    ax.fill_between(xs, lo, hi, color=st["color"], alpha=0.15, lw=0)
                series.append(Series(panel=_label(pconf, panel_keys), label=label, config=_full_config(g),
                                     runs=tuple(sorted(g["run"].unique())), x=tuple(xs), mean=tuple(m),
                                     low=tuple(lo), high=tuple(hi), n=tuple(ns), metric=col))
        ax_asr.set_title(_label(pconf, panel_keys) if panel_keys else "")
        ax_asr.set_ylabel("attack success rate")
        ax_acc.set_ylabel("clean accuracy")
        for ax in (ax_asr, ax_acc):
            ax.set_xlabel("round")
            ax.set_ylim(-0.02, 1.02)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        handles = [matplotlib.lines.Line2D([], [], color=st["color"], lw=1.4) for st in styles]
        names = [f"{_label(conf, lk)} (n={min(g.groupby('round')['run'].nunique())})" for conf, g in groups]
        handles += [matplotlib.lines.Line2D([], [], color="grey", ls="-", lw=1.1),
                    matplotlib.lines.Line2D([], [], color="grey", ls="--", lw=1.1)]
        names += ["attack success rate", "same trigger on the clean twin"]
        if window:
            handles.append(matplotlib.patches.Patch(color="tab:red", alpha=0.15, lw=0))
            names.append("rounds the attack was scheduled")
        ax_acc.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.32), frameon=False, ncol=2)
    warn = _seed_note(series)
    sup = title or "Backdoor durability: success and clean accuracy per round (mean over seeds, 95% t-band)"
    fig.suptitle(sup + ("\n" + warn[0] if warn else ""), fontsize=8.5)
    png, pdf, ax_info = _save(fig, path)
    cap = (f"{sup}. Shaded: the rounds the attack was scheduled; dashed: the same trigger on the "
           f"clean twin (never poisoned). One colour per {', '.join(map(_short, line_keys)) or 'configuration'}.")
    return FigureInfo(png, pdf, cap, series, ax_info, warn, shaded)
