"""Measure robust accuracy of a centrally trained model, with and without PGD adversarial
training, on a project config's data (a small, one-process experiment; not a test).

    PYTHONPATH=src python -m fedmedsec.evasion.measure configs/breastmnist.toml \\
        -s data.path=/work/shared/data/medmnist/breastmnist.npz --epochs 20 \\
        --eps 0.004 0.008 0.016 --at-eps 0.008 --out /tmp/breast.json

Trains ``model.name`` on the pooled training records of all hospitals (``train.batch_size``,
``train.lr``, ``train.momentum``), evaluates on the server's held-out test set with
``robustness_report`` (fgsm, pgd, apgd; the worst case), then trains the same model from
the same seed with ``adversarial_training_hooks`` and evaluates it again.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ..config import load_config
from ..data.pipeline import build_federated_data
from ..models import build_model
from ..training import evaluate, set_torch_threads, train_local
from .adversarial import adversarial_training_hooks
from .domain import domain_for
from .report import robustness_report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("-s", "--set", action="append", default=[], dest="overrides")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--eps", type=float, nargs="+", required=True)
    ap.add_argument("--norm", default="linf")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--attacks", nargs="+", default=["fgsm", "pgd", "apgd"])
    ap.add_argument("--at-eps", type=float, required=True)
    ap.add_argument("--at-steps", type=int, default=5)
    ap.add_argument("--at-fraction", type=float, default=0.5)
    ap.add_argument("--positive-label", type=int, default=1)
    ap.add_argument("--target-label", type=int, default=None, help="targeted mode")
    ap.add_argument("--max-records", type=int, default=None)
    ap.add_argument("--detector", default="none")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    set_torch_threads()
    cfg = load_config(a.config, a.overrides)
    fed = build_federated_data(cfg)
    x, y = fed.pooled_train
    seed = cfg.experiment.seed
    domain = domain_for(fed.modality, fed.input_shape, fed.feature_low, fed.feature_high)
    results: dict = {"config": a.config, "overrides": a.overrides, "epochs": a.epochs,
                     "n_train": int(len(y)), "n_test": int(len(fed.y_test)), "runs": {}}
    for mode in ("standard", "adversarial"):
        model = build_model(cfg.model.name, cfg.params("model"), fed.input_shape, fed.num_classes, seed)
        hooks = None
        if mode == "adversarial":
            hooks = adversarial_training_hooks(eps=a.at_eps, steps=a.at_steps, fraction=a.at_fraction,
                                               domain=domain, norm=a.norm,
                                               generator=torch.Generator().manual_seed(seed + 1))
        t0 = time.time()
        train_local(model, x, y, epochs=a.epochs, batch_size=cfg.train.batch_size, lr=cfg.train.lr,
                    momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay,
                    generator=torch.Generator().manual_seed(seed), hooks=hooks)
        train_s = time.time() - t0
        _, clean = evaluate(model, fed.x_test, fed.y_test)
        t0 = time.time()
        rows = robustness_report(model, fed.x_test, fed.y_test, attacks=a.attacks, eps_list=a.eps,
                                 norm=a.norm, steps=a.steps, domain=domain,
                                 generator=torch.Generator().manual_seed(seed + 2),
                                 positive_label=a.positive_label, targeted_label=a.target_label,
                                 max_records=a.max_records,
                                 detector=a.detector)
        results["runs"][mode] = {"train_seconds": round(train_s, 1), "eval_seconds": round(time.time() - t0, 1),
                                 "clean_accuracy": clean, "rows": rows}
        print(f"{mode}: clean accuracy {clean:.3f} (train {train_s:.0f} s)")
        for r in rows:
            det = (f" detect {r['detection_rate']:.2f} auc {r['detection_auc']:.2f}"
                   if r.get("detector", "none") != "none" else "")
            tgt = (f" target hits {r['targeted_success_rate']:.2f} (clean {r['clean_target_rate']:.2f})"
                   if r["targeted"] else "")
            print(f"  {r['attack']:>10} eps {r['eps']:.4f}: robust {r['robust_accuracy']:.3f} "
                  f"(clean {r['clean_accuracy']:.3f}) sensitivity {r['sensitivity_robust']:.3f}"
                  f"/{r['sensitivity_clean']:.3f}{tgt}{det}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))
    return results


if __name__ == "__main__":
    main()
