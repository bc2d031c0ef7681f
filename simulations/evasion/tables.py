"""Tables, claims and figures of the evasion sweeps (simulations/evasion/README.md).

    python simulations/evasion/tables.py runs/evasion/ecg runs/evasion/breastmnist --figures runs/evasion/figures

For each sweep directory: per (defense, adversarial training) the clean accuracy, the
robust accuracy at every eps (worst case per record over FGSM, PGD-10 and APGD-10), the
clinical sensitivity of the positive class clean and under attack, and feature squeezing's
detection rate of the successful adversarial inputs at 5% clean false positives, as mean
+- sd over seeds (n seeds); then the paired effect of
adversarial training per defense (robust gain at the default eps, clean cost), the claims of
every claims file of this folder whose grid is the sweep's (``shape.toml``: ECG;
``claims_breastmnist.toml``: BreastMNIST), the targeted table when ``targeted.py`` wrote
``targeted.csv``, and with ``--figures`` the plots of ``fedmedsec.results.plots_security``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE.parent))
from check_shapes import claims_table, folder_claims, mean_sd  # noqa: E402

#: the README's default budget per dataset (data.name): PGD there cuts accuracy by >= 0.2
DEFAULT_EPS = {"ecg_synthetic": 0.3, "medmnist": 4 / 255}
#: always answering the majority class (the chance line of the figures)
MAJORITY = {"ecg_synthetic": 0.25, "medmnist": 0.731}


def _eps_name(e: float, image: bool) -> str:
    return f"{round(e * 255)}/255" if image else f"{e:g}"


def evasion_table(ev, dataset: str) -> str:
    image = dataset == "medmnist"
    w = ev[ev["worst"]]
    eps = sorted(w["eps"].unique())
    e0 = min(eps, key=lambda e: abs(e - DEFAULT_EPS.get(dataset, eps[-1])))
    head = (["defense", "adversarial training", "clean accuracy"]
            + [f"robust @ {_eps_name(e, image)}" for e in eps]
            + [f"sensitivity clean -> @ {_eps_name(e0, image)}", f"squeezing detection @ {_eps_name(e0, image)}"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (d, a), g in w.groupby(["defense.name", "train.adversarial"], sort=False):
        at = g[g["eps"] == e0]
        cells = [d, a, mean_sd(g.drop_duplicates("run")["clean_accuracy"])]
        cells += [mean_sd(g[g["eps"] == e]["robust_accuracy"]) for e in eps]
        cells += [f"{mean_sd(at['sensitivity_clean']).split(' (')[0]} -> {mean_sd(at['sensitivity_robust'])}",
                  mean_sd(at["detection_rate"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def at_effect_table(ev, dataset: str) -> str:
    """Paired by seed: robust gain of adversarial training at the default eps, clean cost."""
    image = dataset == "medmnist"
    w = ev[ev["worst"]]
    eps = sorted(w["eps"].unique())
    e0 = min(eps, key=lambda e: abs(e - DEFAULT_EPS.get(dataset, eps[-1])))
    lines = [f"| defense | robust gain @ {_eps_name(e0, image)} (pgd - none) | clean cost (none - pgd) |",
             "|---|---|---|"]
    for d, g in w[w["eps"] == e0].groupby("defense.name", sort=False):
        by = {(r["train.adversarial"], r["experiment.seed"]): r for _, r in g.iterrows()}
        seeds = sorted({s for _, s in by})
        gain = [by[("pgd", s)]["robust_accuracy"] - by[("none", s)]["robust_accuracy"]
                for s in seeds if ("pgd", s) in by and ("none", s) in by]
        cost = [by[("none", s)]["clean_accuracy"] - by[("pgd", s)]["clean_accuracy"]
                for s in seeds if ("pgd", s) in by and ("none", s) in by]
        lines.append(f"| {d} | {mean_sd(gain)} | {mean_sd(cost)} |")
    return "\n".join(lines)


def claims(sweep: Path) -> list[dict]:
    return folder_claims(HERE, sweep)


def targeted_table(sweep: Path, dataset: str) -> str | None:
    """targeted.csv (targeted.py): per configuration, the share of the other classes' records
    called the target without attack, then under attack at every eps (worst case over the
    targeted attacks), and feature squeezing's detection of those successes."""
    import pandas as pd

    p = sweep / "targeted.csv"
    if not p.is_file():
        return None
    image = dataset == "medmnist"
    what = "malignant -> benign" if image else "other rhythms -> normal sinus"
    t = pd.read_csv(p)
    eps = sorted(t["eps"].unique())
    head = ["defense", "adversarial training", f"{what}, no attack"] + \
        [f"{what} @ {_eps_name(e, image)}" for e in eps] + \
        [f"squeezing detection @ {_eps_name(eps[-1], image)}", "detector FPR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (d, a), g in t.groupby(["defense.name", "train.adversarial"], sort=False):
        cells = [d, a, mean_sd(g[g["eps"] == eps[0]]["clean_target_rate"])]
        cells += [mean_sd(g[g["eps"] == e]["targeted_success_rate"]) for e in eps]
        last = g[g["eps"] == eps[-1]]
        cells += [mean_sd(last["detection_rate"]), mean_sd(last["detector_false_positive_rate"]).split(" (")[0]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(sweep: Path, ev, runs, out: Path, dataset: str) -> list[str]:
    from fedmedsec.results import plots_security as ps

    out.mkdir(parents=True, exist_ok=True)
    name = sweep.name
    caps = []
    chance = MAJORITY.get(dataset)
    caps.append(ps.plot_robust_accuracy(ev, out / f"{name}_robust_accuracy", chance=chance,
                                        title=f"{name}: robust accuracy against eps").caption)
    caps.append(ps.plot_robust_accuracy(ev, out / f"{name}_robust_sensitivity", metric="sensitivity_robust",
                                        ylabel="sensitivity of the positive class under attack",
                                        title=f"{name}: sensitivity under attack").caption)
    caps.append(ps.plot_robust_accuracy(ev, out / f"{name}_detection", metric="detection_rate",
                                        ylabel="feature squeezing detection rate (5% FPR)",
                                        title=f"{name}: detection of successful adversarial inputs").caption)
    e0 = DEFAULT_EPS.get(dataset)
    for adv in ("none", "pgd"):
        sel = runs[(runs["defense.name"] == "fedavg") & (runs["train.adversarial"] == adv)
                   & (runs["experiment.seed"] == 0)]
        if sel.empty or e0 is None:
            continue
        got = ps.examples_from_run(sel.iloc[0]["path"], n=3)
        _, info = ps.draw_adversarial_examples(
            got["model"], got["domain"], got["x"], got["y"], out / f"{name}_examples_{adv}", eps=e0,
            steps=got["steps"], class_names=got["class_names"], sampling_rate=got["sampling_rate"],
            title=f"{name}, fedavg, adversarial training {adv}, seed 0: PGD-{got['steps']} at eps "
                  f"{_eps_name(e0, dataset == 'medmnist')}")
        caps.append(info.caption)
    return caps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--figures", help="write the figures here")
    a = ap.parse_args(argv)
    from fedmedsec.results import plots_security as ps

    for s in map(Path, a.sweeps):
        runs = ps.load_runs(s)
        ev = ps.evasion_frame(runs)
        dataset = str(runs["data.name"].iloc[0])
        print(f"\n## {s.name} ({len(runs)} runs)\n")
        print(evasion_table(ev, dataset))
        print()
        print(at_effect_table(ev, dataset))
        res = claims(s)
        if res:
            print()
            print(claims_table(res))
        t = targeted_table(s, dataset)
        if t:
            print()
            print(t)
        if a.figures:
            for c in figures(s, ev, runs, Path(a.figures), dataset):
                print(f"\nfigure: {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
