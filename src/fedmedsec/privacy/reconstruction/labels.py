"""Label recovery from an update: iDLG's sign rule (B = 1) and bias-based label counts (B > 1).

Both read the classifier (the last ``nn.Linear``, producing the logits). With mean
cross-entropy over a batch of B records, p_i = softmax(z_i) and one-hot y_i,

    dL/db_c = (1/B) sum_i (p_ic - y_ic),        dL/dW_c = (1/B) sum_i (p_ic - y_ic) h_i,

where h_i is the classifier's input (>= 0 after a ReLU or an average of ReLUs, as in every
fedmedsec model). For B = 1, p_c - y_c < 0 only at the true class (Zhao et al., "iDLG", 2020):
the true class is the one whose bias (or, Zhao et al.'s form, weight-row) gradient is
negative. An update is -lr times a sum of such gradients (each local step has the same sign
pattern for the one record), so the rule reads ``argmax`` of the update's bias entries, for
FedSGD and FedAvg alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._functional import Layout, num_local_steps


def classifier_slices(model: nn.Module, layout: Layout, num_classes: int) -> tuple[slice, slice | None]:
    """Slices of the last nn.Linear's weight [C, h] and bias [C] (None without bias) in the
    state vector; ValueError if the model's last Linear does not output ``num_classes``."""
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = (name, mod)
    if last is None or last[1].out_features != num_classes:
        raise ValueError(
            f"reconstruction: label recovery needs a final nn.Linear with {num_classes} outputs"
        )
    name, mod = last
    prefix = f"{name}." if name else ""
    where = dict(zip(layout.names, layout.slices))
    return where[prefix + "weight"], (where[prefix + "bias"] if mod.bias is not None else None)


def idlg_label(model: nn.Module, layout: Layout, update: torch.Tensor, num_classes: int) -> int:
    """iDLG (Zhao et al. 2020) for one record: the class whose classifier bias entry of the
    update (= -lr * sum of gradients) is the largest, i.e. whose gradient is negative; without
    a bias, the weight row with the largest sum (needs classifier inputs >= 0, Zhao et al.)."""
    w_sl, b_sl = classifier_slices(model, layout, num_classes)
    if b_sl is not None:
        return int(torch.argmax(update[b_sl]))
    w = update[w_sl].reshape(num_classes, -1)
    return int(torch.argmax(w.sum(1)))


def label_counts(
    model: nn.Module,
    layout: Layout,
    update: torch.Tensor,
    *,
    num_classes: int,
    num_records: int,
    lr: float,
    local_epochs: int,
    batch_size: int,
    mean_probs: torch.Tensor,
) -> np.ndarray:
    """Estimated count of each class among the ``num_records`` records, int64 [C] summing to N.

    From the bias identity above: over S local steps of batch size b (FedSGD: S = 1, b = N)
    the bias update is Delta_b_c = -lr * sum_t (1/b_t) sum_{i in t} (p_ic - y_ic). Assuming
    the model's mean probability of class c on the records is ``mean_probs[c]`` (the server
    estimates it from data it holds, e.g. its public test records) and b_t = N E / S,

        n_c = N * mean_probs[c] + (N / S) * Delta_b_c / lr.

    Exact for FedSGD when mean_probs is the records' true mean probability (the idea of
    Wainakh et al., "User-level label leakage from gradients in federated learning", PETS
    2022; Geng et al. 2021). Rounded to non-negative integers summing to N by largest
    remainder."""
    _, b_sl = classifier_slices(model, layout, num_classes)
    if b_sl is None:
        raise ValueError("reconstruction: label-count recovery needs a classifier bias")
    steps = num_local_steps(num_records, local_epochs, batch_size)
    est = num_records * mean_probs.double() + (num_records / steps) * update[b_sl].double() / lr
    est = est.clamp_min(0.0).numpy()
    if est.sum() <= 0:
        est = np.full(num_classes, num_records / num_classes)
    est = est * (num_records / est.sum())
    counts = np.floor(est).astype(np.int64)
    rest = num_records - int(counts.sum())
    order = np.argsort(-(est - counts), kind="stable")
    counts[order[:rest]] += 1
    return counts


def labels_from_counts(counts: np.ndarray) -> torch.Tensor:
    """Counts [C] -> labels int64 [N] in class order (the dummy records are exchangeable, so
    which slot gets which label does not matter)."""
    return torch.as_tensor(np.repeat(np.arange(len(counts)), counts), dtype=torch.long)
