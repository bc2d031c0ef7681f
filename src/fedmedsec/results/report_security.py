"""The security sections of ``fedmedsec report`` (run or sweep directory): robust accuracy
against the evasion budget per defense (and the positive class's sensitivity and feature
squeezing's detection rate under attack when recorded), a figure of clean / adversarial /
difference inputs of one run's final model, and the per-round durability of a backdoor
with its attack window shaded. Each section appears only when the runs recorded its data
(summary.json ``evasion.rows``; ``attack_rounds`` with a per-round attack success rate).

The figures are :mod:`.plots_security`'s; :func:`adapt` turns one of its functions into
what ``report.Page.plot`` draws (a ``plots.Plotted``; its ``NoData`` becomes the report's
note).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from . import plots
from . import plots_security as ps

__all__ = ["adapt", "security_sections", "pick_example_run"]


def adapt(fn: Callable[..., Any]) -> Callable[..., plots.Plotted]:
    """``fn(*data, path, **kw) -> FigureInfo`` (or ``(anything, FigureInfo)``) as
    ``Page.plot`` calls it, returning a ``plots.Plotted`` (caption, [png, pdf], one point per
    drawn series, the axes' labels)."""

    def draw(*args: Any, **kwargs: Any) -> plots.Plotted:
        try:
            info = fn(*args, **kwargs)
        except ps.NoData as e:
            raise plots.NoData(str(e)) from e
        if isinstance(info, tuple):
            info = info[-1]
        points = [{"panel": s.panel, "series": s.label, "metric": s.metric, "x": list(s.x), "mean": list(s.mean),
                   "low": list(s.low), "high": list(s.high), "n": list(s.n), "runs": list(s.runs)}
                  for s in info.series]
        axes = [{"title": t, "xlabel": x, "ylabel": y} for t, x, y in info.axes]
        return plots.Plotted(caption=info.caption, files=[info.png, info.pdf], points=points, axes=axes)

    draw.__name__ = getattr(fn, "__name__", "draw")
    return draw


def pick_example_run(runs: pd.DataFrame) -> pd.Series | None:
    """The run whose final model the example figure attacks: one with evasion budgets and a
    final_model.pt, preferring FedAvg without adversarial training and the lowest seed."""
    def has(r) -> bool:
        ev = (r["summary"] or {}).get("evasion") or {}
        return bool(ev.get("rows")) and (Path(r["path"]) / "final_model.pt").is_file()

    cand = runs[[has(r) for _, r in runs.iterrows()]]
    if cand.empty:
        return None

    def rank(r) -> tuple:
        return (str(r.get("defense.name", "fedavg")) != "fedavg", str(r.get("train.adversarial", "none")) != "none",
                int(r.get("experiment.seed", 0) or 0), str(r["run"]))

    return min((r for _, r in cand.iterrows()), key=rank)


def _examples(run: pd.Series, path: Path, *, n: int = 3, candidates: int = 32):
    """Attack up to ``candidates`` correctly classified server test records of the run's final
    model at its largest eps and draw ``n`` of them, those the attack flipped first."""
    got = ps.examples_from_run(run["path"], n=candidates)
    if not len(got["y"]):
        raise ps.NoData("the final model classifies no server test record correctly")
    eps = sorted(got["eps"])
    e = eps[-1]  # the largest budget: the figure should show what the attack can do
    image = str(run.get("data.name", "")) == "medmnist"
    return ps.draw_adversarial_examples(
        got["model"], got["domain"], got["x"], got["y"], path, eps=e, norm=got["norm"], steps=got["steps"],
        seed=int(run.get("experiment.seed", 0) or 0), class_names=got["class_names"],
        sampling_rate=got["sampling_rate"], show=n,
        title=f"{run['run']}: PGD-{got['steps']} ({got['norm']}) at eps {ps._eps_label(e, image)}")


def _durable(runs: pd.DataFrame) -> bool:
    for _, r in runs.iterrows():
        s = r["summary"] or {}
        if s.get("attack_rounds") and s.get("attack_success_rate") is not None:
            return True
    return False


def security_sections(page, root: str | Path) -> None:
    """Append the evasion and durability sections to ``page`` (a ``report.Page``) for the
    finished runs under ``root``; nothing when the runs have no such data."""
    try:
        runs = ps.load_runs(root)
    except ps.NoData:
        return
    try:
        ev = ps.evasion_frame(runs)
    except ps.NoData:
        ev = None
    if ev is not None:
        page.h2("Robustness to evasion", "evasion",
                "Accuracy of the final global model on the server's test records (the hospitals' when the server holds "
                "none) against the budget eps of the evasion attack: the per-record worst case over the attacks run "
                "(summary.json evasion.rows), eps = 0 the clean accuracy of the same records; one line per "
                "configuration (defense, adversarial training, ...), mean and 95% t-interval over seeds.")
        page.plot(adapt(ps.plot_robust_accuracy), "robust_accuracy_vs_eps", ev)
        if pd.to_numeric(ev.get("sensitivity_robust"), errors="coerce").notna().any():
            page.plot(adapt(ps.plot_robust_accuracy), "robust_sensitivity_vs_eps", ev, metric="sensitivity_robust",
                      ylabel="sensitivity of the positive class under attack")
        if "detection_rate" in ev and pd.to_numeric(ev["detection_rate"], errors="coerce").notna().any():
            page.plot(adapt(ps.plot_robust_accuracy), "evasion_detection_vs_eps", ev, metric="detection_rate",
                      include_clean=False, ylabel="detection rate of successful adversarial inputs")
        run = pick_example_run(runs)
        if run is not None:
            page.plot(adapt(_examples), "adversarial_examples", run)
        else:
            page.note("Adversarial example figure skipped: no run with evasion rows kept its final_model.pt.")
    if _durable(runs):
        page.h2("Backdoor durability", "durability",
                "Attack success rate of the trigger per round (solid) beside the same trigger on the clean twin "
                "(dashed) and the clean accuracy, the rounds the attack was scheduled shaded; what stays after the "
                "window is the backdoor's lifespan (summary.json backdoor_lifespan).")
        try:
            rounds = ps.rounds_frame(runs)
        except ps.NoData as e:
            page.note(f"Plot skipped: {e}.")
            return
        page.plot(adapt(ps.plot_durability), "backdoor_durability", rounds)

