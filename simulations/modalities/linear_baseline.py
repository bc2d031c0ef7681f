"""Logistic regression on the raw (preprocessed) inputs of a config's data, and the majority
rate: the checks that a task is not trivial, printed beside the federated and centralized
results (``fedavg_by_hand.py --linear`` prints the same over several seeds).

    python simulations/modalities/linear_baseline.py configs/ecg_synthetic.toml
    python simulations/modalities/linear_baseline.py configs/breastmnist.toml -s data.path=...
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression

from fedmedsec.config import load_config
from fedmedsec.data.pipeline import build_federated_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("-s", "--set", action="append", default=[])
    args = ap.parse_args()
    data = build_federated_data(load_config(args.config, args.set))
    x, y = data.pooled_train
    model = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y)
    acc = model.score(data.x_test.reshape(len(data.x_test), -1), data.y_test)
    major = np.mean(data.y_test == np.bincount(y).argmax())
    print(f"logistic regression on the raw inputs: accuracy {acc:.3f} on {len(data.y_test)} held-out records "
          f"(majority rate {major:.3f}: always the most frequent training class)")


if __name__ == "__main__":
    main()
