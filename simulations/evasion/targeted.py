"""Targeted evasion of the saved final models of a sweep: the missed diagnosis (BreastMNIST
malignant -> benign) and feature squeezing against it.

A run evaluates one evasion mode (``evasion.targeted``); training every configuration again
only to attack it in the targeted mode would double the sweep. The final global model is
saved (``final_model.pt``), so this script attacks it afterwards with the same functions the
round loop uses (``fedmedsec.evasion.report.robustness_report`` on the server's test set, in
the run's input domain, at the run's ``evasion.eps``, ``norm``, ``steps``), targeted at
``--target`` (default 1 = BreastMNIST benign), with feature squeezing at 5% clean false
positives calibrated on the same test records (as the in-run server evaluation does).

    python simulations/evasion/targeted.py runs/evasion/breastmnist --target 1

writes ``targeted.csv`` in the sweep directory: one row per run and eps with the run's grid
values, targeted_success_rate (records of another class, here malignant, classified as the
target under attack: the worst case over pgd and apgd), clean_target_rate (the same without
attack), sensitivity_robust of the positive class, detection_rate and the detector's false
positive rate. Random starts: torch.Generator seeded with the run's experiment.seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))


def attack_run(run: Path, target: int, attacks: list[str]) -> list[dict]:
    import numpy as np
    import torch

    from fedmedsec.config import config_from_dict
    from fedmedsec.evasion.report import robustness_report
    from fedmedsec.experiment import build_setup

    raw = tomllib.loads((run / "config.toml").read_text())
    raw["simulation"] = {"backend": "inprocess"}  # a resolved in-process config keeps Ray keys it refuses
    cfg = config_from_dict(raw)
    setup = build_setup(cfg)
    model = setup.new_model()
    model.load_state_dict(torch.load(run / "final_model.pt", weights_only=True))
    d, ev = setup.data, cfg.evasion
    positive = ev.positive_label if ev.positive_label is not None else d.positive_label
    rows = robustness_report(
        model, np.asarray(d.x_test), np.asarray(d.y_test), attacks=attacks, eps_list=ev.eps, norm=ev.norm,
        steps=ev.steps, targeted_label=target, domain=setup.input_domain,
        generator=torch.Generator().manual_seed(cfg.experiment.seed), positive_label=positive,
        num_classes=d.num_classes, max_records=ev.max_records, detector="feature_squeezing",
        detector_fpr=ev.detector_fpr, x_calibration=np.asarray(d.x_test)[:200])
    worst = "worst_case" if len(attacks) > 1 else attacks[0]
    return [r for r in rows if r["attack"] == worst]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="sweep directory (with sweep.json)")
    ap.add_argument("--target", type=int, default=1, help="target class (BreastMNIST: 1 = benign)")
    ap.add_argument("--attacks", nargs="+", default=["pgd", "apgd"])
    a = ap.parse_args(argv)
    import pandas as pd

    from fedmedsec.training import set_torch_threads

    set_torch_threads()
    sweep = Path(a.sweep)
    points = json.loads((sweep / "sweep.json").read_text())["points"]
    out = []
    for p in points:
        run = sweep / p["run"]
        if not (run / "final_model.pt").is_file():
            print(f"skip {p['run']}: no final_model.pt", file=sys.stderr)
            continue
        for r in attack_run(run, a.target, a.attacks):
            out.append({"run": p["run"], **p["values"], "eps": r["eps"],
                        "targeted_success_rate": r["targeted_success_rate"],
                        "clean_target_rate": r["clean_target_rate"], "target_eligible": r["target_eligible"],
                        "sensitivity_clean": r["sensitivity_clean"], "sensitivity_robust": r["sensitivity_robust"],
                        "detection_rate": r.get("detection_rate"), "n_successful": r.get("n_successful"),
                        "detector_false_positive_rate": r.get("detector_false_positive_rate")})
        print(f"{p['run']}: done", file=sys.stderr)
    pd.DataFrame(out).to_csv(sweep / "targeted.csv", index=False)
    print(f"wrote {sweep / 'targeted.csv'} ({len(out)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
