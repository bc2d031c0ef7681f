"""Lifespan table, claims and durability figures of the durable-backdoor sweeps
(simulations/durable_backdoor/README.md).

    python simulations/durable_backdoor/tables.py runs/durable_backdoor/ecg runs/durable_backdoor/ecg_detector \\
        --figures runs/durable_backdoor/figures

Per (attack, defense or detector): the lift over the clean twin at the last attack round (was
the backdoor planted?), summary.json's ``backdoor_lifespan`` after the window (rounds_to_fade:
rounds until the lift first falls below experiment.lifespan_threshold = 0.1; censored: it never
did within the run; mean_after: the mean lift over the clean rounds), the final clean accuracy
and the clean twin's, the detector's or the defense's TPR / FPR against the real attacker;
mean +- sd over seeds, and the per-seed values of rounds_to_fade.
Then the claims of every claims file of this folder whose grid is the sweep's, and with
``--figures`` the per-round durability plot (``plots_security.plot_durability``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE.parent))
from check_shapes import claims_table, folder_claims, mean_sd  # noqa: E402


def lifespan_rows(runs) -> list[dict]:
    import pandas as pd

    out = []
    for _, r in runs.iterrows():
        s = r["summary"]
        life = s.get("backdoor_lifespan") or {}
        rounds = pd.read_csv(Path(r["path"]) / "rounds.csv")
        last = life.get("last_attack_round") or (max(s.get("attack_rounds") or [0]) or None)
        at_last = rounds.loc[rounds["round"] == last, "attack_success_lift"] if last else []
        det = s.get("detector") or s.get("detection") or {}
        out.append({
            "attack": r["attack.name"], "defense": r["defense.name"],
            "detector": r.get("detection.name") or "none", "seed": r["experiment.seed"],
            "lift_at_window_end": float(at_last.iloc[0]) if len(at_last) else None,
            "rounds_to_fade": life.get("rounds_to_fade"), "censored": life.get("censored"),
            "rounds_after": life.get("rounds_after"), "mean_after": life.get("mean_after"),
            "final_lift": s.get("attack_success_lift"), "clean_accuracy": s.get("clean_accuracy"),
            "twin_clean_accuracy": (s.get("clean_twin") or {}).get("clean_accuracy"),
            "tpr": det.get("tpr"), "fpr": det.get("fpr")})
    return out


def lifespan_table(rows: list[dict]) -> str:
    import pandas as pd

    t = pd.DataFrame(rows)
    head = ["attack", "defense / detector", "lift at window end", "rounds_to_fade (per seed; c = censored)",
            "mean lift after", "final clean acc (twin)", "TPR / FPR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (a, d, det), g in t.groupby(["attack", "defense", "detector"], sort=False):
        g = g.sort_values("seed")
        fade = ", ".join(f">{int(x.rounds_after)} c" if x.censored else str(int(x.rounds_to_fade))
                         if x.rounds_to_fade == x.rounds_to_fade and x.rounds_to_fade is not None else "-"
                         for x in g.itertuples())
        name = d if det == "none" else f"{d} + {det}"
        lines.append(f"| {a} | {name} | {mean_sd(g['lift_at_window_end'])} | {fade} | {mean_sd(g['mean_after'])} | "
                     f"{mean_sd(g['clean_accuracy']).split(' (')[0]} ({mean_sd(g['twin_clean_accuracy']).split(' (')[0]}) | "
                     f"{mean_sd(g['tpr']).split(' (')[0]} / {mean_sd(g['fpr']).split(' (')[0]} |")
    return "\n".join(lines)


def claims(sweep: Path) -> list[dict]:
    return folder_claims(HERE, sweep)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--figures", help="write the figures here")
    a = ap.parse_args(argv)
    from fedmedsec.results import plots_security as ps

    for s in map(Path, a.sweeps):
        runs = ps.load_runs(s)
        print(f"\n## {s.name} ({len(runs)} runs)\n")
        print(lifespan_table(lifespan_rows(runs)))
        res = claims(s)
        if res:
            print()
            print(claims_table(res))
        if a.figures:
            out = Path(a.figures)
            info = ps.plot_durability(ps.rounds_frame(runs), out / f"{s.name}_durability",
                                      title=f"{s.name}: backdoor success and clean accuracy per round")
            print(f"\nfigure: {info.caption}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
