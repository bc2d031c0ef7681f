"""FedAvg and the centralized baseline by hand, in one process, with every ``train.*`` option
(``training.train_kwargs`` and ``training.lr_at``), beside the trivial baselines.

It repeats what ``fedmedsec run`` does for a clean run (no attack, defense fedavg, no privacy,
all hospitals every round): the same data (``build_federated_data``), the same initial
model, the same per-(round, hospital) generators and the same equal-weight mean, so on the
old settings it prints the CLI's clean accuracy to the last digit (checked in the README).
Use it to measure training options before the round loop passes them to ``train_local``.

    python simulations/modalities/fedavg_by_hand.py configs/breastmnist.toml \\
        -s data.path=../shared/data/medmnist/breastmnist.npz --seeds 0 1 2 --linear

Prints one line per seed and mode (test accuracy, share of the most predicted class: 1.0 is
a collapse to one class) and the mean and spread (sample std) over seeds, with the majority
rate (always answering the most frequent training class) and, with ``--linear``, logistic
regression on the raw inputs (as ``linear_baseline.py``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from fedmedsec.config import Config, load_config
from fedmedsec.data.pipeline import FederatedData, build_federated_data
from fedmedsec.models import build_model
from fedmedsec.training import (
    evaluate,
    load_state_vector,
    predict,
    set_torch_threads,
    state_vector,
    train_kwargs,
    train_local,
)


def generator(seed: int, *key: int) -> torch.Generator:
    """As ``experiment.Setup.generator``: a torch generator keyed by (seed, *key)."""
    ss = np.random.SeedSequence([seed, *key])
    return torch.Generator().manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> 1))


def _check_clean(cfg: Config) -> None:
    if (cfg.attack.name != "none" or cfg.defense.name != "fedavg" or cfg.privacy.mode != "none"
            or cfg.experiment.fraction_train != 1.0 or cfg.defense.weighted):
        raise SystemExit("fedavg_by_hand: clean runs only (attack none, defense fedavg unweighted, "
                         "privacy none, experiment.fraction_train = 1)")


def _new_model(cfg: Config, data: FederatedData):
    return build_model(cfg.model.name, cfg.params("model"), data.input_shape, data.num_classes,
                       seed=cfg.experiment.seed)


def _scores(model, data: FederatedData) -> dict:
    loss, acc = evaluate(model, data.x_test, data.y_test)
    pred = predict(model, data.x_test).argmax(1)
    top = np.bincount(pred, minlength=data.num_classes).max() / max(len(pred), 1)
    return {"accuracy": acc, "test_loss": loss, "top_prediction_share": float(top)}


def run_federated(cfg: Config, data: FederatedData | None = None, every: int = 0) -> dict:
    """FedAvg (McMahan et al. 2017) over all hospitals each round; the equal-weight mean of
    the updates, as ``aggregators.mean`` without ``defense.weighted``."""
    _check_clean(cfg)
    data = data or build_federated_data(cfg)
    seed, rounds = cfg.experiment.seed, cfg.experiment.rounds
    model = _new_model(cfg, data)
    global_vec = state_vector(model)
    n = len(data.hospitals)
    for r in range(1, rounds + 1):
        kw = train_kwargs(cfg.train, data.modality, r, rounds)
        vecs = []
        for h in data.hospitals:
            local = _new_model(cfg, data)
            load_state_vector(local, global_vec)
            train_local(local, h.x_train, h.y_train, **kw, generator=generator(seed, r, h.id))
            vecs.append(state_vector(local))
        updates = torch.stack(vecs) - global_vec
        w = torch.full((n,), 1.0 / n, dtype=updates.dtype)
        global_vec = global_vec + w @ updates
        if every and r % every == 0:
            load_state_vector(model, global_vec)
            _curve(r, model, data)
    load_state_vector(model, global_vec)
    return _scores(model, data)


def _curve(r: int, model, data: FederatedData) -> None:
    s = _scores(model, data)
    print(f"  round {r}: accuracy {s['accuracy']:.3f} loss {s['test_loss']:.3f} "
          f"top-prediction share {s['top_prediction_share']:.3f}", flush=True)


def run_centralized(cfg: Config, data: FederatedData | None = None, every: int = 0) -> dict:
    """One model on the pooled training data, ``rounds`` calls of ``local_epochs`` epochs
    (a fresh optimiser each, the round's lr), as the CLI's ``experiment.mode = centralized``."""
    data = data or build_federated_data(cfg)
    seed, rounds = cfg.experiment.seed, cfg.experiment.rounds
    model = _new_model(cfg, data)
    x, y = data.pooled_train
    for r in range(1, rounds + 1):
        train_local(model, x, y, **train_kwargs(cfg.train, data.modality, r, rounds),
                    generator=generator(seed, r, 0xCE))
        if every and r % every == 0:
            _curve(r, model, data)
    return _scores(model, data)


def baselines(data: FederatedData, linear: bool) -> dict:
    _, y = data.pooled_train
    major = int(np.bincount(y, minlength=data.num_classes).argmax())
    out = {"majority_rate": float(np.mean(data.y_test == major))}
    if linear:
        from sklearn.linear_model import LogisticRegression

        x, _ = data.pooled_train
        lr = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)
        out["linear"] = float(lr.score(data.x_test.reshape(len(data.x_test), -1), data.y_test))
    return out


def _summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("-s", "--set", action="append", default=[], help="dotted.key=value override")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--mode", choices=["federated", "centralized", "both"], default="both")
    ap.add_argument("--linear", action="store_true", help="also logistic regression on the raw inputs")
    ap.add_argument("--every", type=int, default=0, help="print test accuracy every k rounds")
    ap.add_argument("--json", help="write the per-seed results to this file")
    args = ap.parse_args()
    set_torch_threads()
    modes = ["federated", "centralized"] if args.mode == "both" else [args.mode]
    rows = []
    for seed in args.seeds:
        cfg = load_config(args.config, [*args.set, f"experiment.seed={seed}"])
        data = build_federated_data(cfg)
        row = {"seed": seed, **baselines(data, args.linear)}
        for mode in modes:
            t0 = time.perf_counter()
            res = (run_federated if mode == "federated" else run_centralized)(cfg, data, args.every)
            row[mode] = res
            print(f"seed {seed} {mode:11s} accuracy {res['accuracy']:.4f}  top-prediction share "
                  f"{res['top_prediction_share']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        rows.append(row)
    print(f"{args.config} {' '.join(args.set)} seeds {args.seeds}")
    for mode in modes:
        print(f"  {mode:11s} {_summary([r[mode]['accuracy'] for r in rows])}")
    if args.linear:
        print(f"  linear      {_summary([r['linear'] for r in rows])}")
    print(f"  majority    {_summary([r['majority_rate'] for r in rows])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "overrides": args.set, "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
