"""The reconstruction audit: what a curious server recovers of one hospital's records.

At round ``round`` the server takes the global model it broadcast, and the target hospital
computes its update on ``batch_size`` of its records (a tiny client: the NVFlare chest X-ray
study, Hatamizadeh et al., IEEE TMI 2023, found leakage concentrated there), with the
configured client defenses (DP-SGD, pruning). The server observes that update, or with
secure aggregation only the sum over the round's hospitals, and inverts it. The scores sit
beside the baseline guess (one record the server can form without the update, e.g. the mean
of its public records).

Secure aggregation, modelled: n hospitals each send an update on B records from the same
global model; the server sees their sum and attacks the mean. For FedSGD the mean of n
one-step updates on B records each is exactly the one-step update on the union of nB
records (equal batch sizes), so the attack is a batch reconstruction of nB records and the
target's records are scored against their matched reconstructions. For FedAvg the mean of
the local trajectories is modelled as one client with nB records and batch n*b (exact when
each client makes one local step; an approximation otherwise).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ...config import ReconstructionConfig
from ...training import load_state_vector, state_vector, train_local
from ..pruning import prune_update
from .invert import reconstruct
from .metrics import score_reconstruction

#: the ``[reconstruction]`` config section (``config.ReconstructionConfig``, mounted as
#: ``Config.reconstruction``; defined there so that validating a config imports no torch)
ReconstructionParams = ReconstructionConfig


def client_update(
    model: nn.Module,
    global_vec: torch.Tensor,
    x: np.ndarray,
    y: np.ndarray,
    *,
    setting: str,
    lr: float,
    local_epochs: int = 1,
    batch_size: int | None = None,
    generator: torch.Generator,
    dp_noise_multiplier: float | None = None,
    dp_max_grad_norm: float = 1.0,
    prune_ratio: float = 0.0,
    clip_norm: float | None = None,
) -> torch.Tensor:
    """The update Tensor[d] = w_local - w_global a hospital sends after training a copy of
    ``model`` loaded with ``global_vec`` on (x [B, ...], y [B]): FedSGD (one step of lr on all
    B records) or FedAvg (local_epochs of SGD with batch_size), through the project's
    ``training.train_local``, or DP-SGD (``privacy.train_dp_sgd``, Poisson rate batch/B, clip
    ``dp_max_grad_norm``) when ``dp_noise_multiplier`` is set; then pruned at
    ``prune_ratio``; then clipped to L2 norm ``clip_norm`` when given (DP-FedAvg's clip done
    by the hospital itself, as under secure aggregation)."""
    net = copy.deepcopy(model)
    load_state_vector(net, global_vec)
    n = len(y)
    epochs, bs = (1, n) if setting == "fedsgd" else (local_epochs, batch_size or n)
    if dp_noise_multiplier is None:
        train_local(net, x, y, epochs=epochs, batch_size=bs, lr=lr, generator=generator)
    else:
        from ..dp_sgd import train_dp_sgd

        train_dp_sgd(net, x, y, epochs=epochs, batch_size=bs, lr=lr, momentum=0.0,
                     noise_multiplier=dp_noise_multiplier, max_grad_norm=dp_max_grad_norm,
                     history=[], generator=generator, delta=1e-5)
    upd = state_vector(net) - global_vec
    upd = prune_update(upd, prune_ratio) if prune_ratio else upd
    if clip_norm is not None:
        from ..central import clip_updates

        upd = clip_updates(upd[None], clip_norm)[0]
    return upd


def reconstruction_audit(
    model: nn.Module,
    global_vec: torch.Tensor,
    target: tuple[np.ndarray, np.ndarray],
    *,
    params: ReconstructionParams,
    modality: str,
    num_classes: int,
    train_lr: float,
    local_epochs: int,
    local_batch_size: int,
    baseline: np.ndarray,
    generator: torch.Generator,
    proxy_x: np.ndarray | None = None,
    others: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    secure_aggregation: bool = False,
    dp_noise_multiplier: float | None = None,
    dp_max_grad_norm: float = 1.0,
    prune_ratio: float = 0.0,
    clip_norm: float | None = None,
    return_records: bool = False,
):
    """Run the audit; returns the ``summary.json["reconstruction"]`` dict (with
    ``return_records``: (dict, originals [nB, ...], matched reconstructions [nB, ...]) for
    figures; the target's records come first).

    target: the target hospital's (x [B, ...], y [B]) for this audit (B = params.batch_size).
    others: the other hospitals' (x, y) of B records each, used only with
    ``secure_aggregation`` (their updates enter the sum). baseline: one record [*shape],
    the server's guess. proxy_x: server-held records (label-count prior; may be None).
    train_lr, local_epochs, local_batch_size: the clients' recipe (``train`` section).
    dp_noise_multiplier / dp_max_grad_norm, prune_ratio, clip_norm: the clients' defenses
    (:func:`client_update`).
    """
    t0 = time.perf_counter()
    xt, yt = np.asarray(target[0], dtype=np.float32), np.asarray(target[1], dtype=np.int64)
    b = len(yt)
    groups = [(xt, yt)] + (list(others) if secure_aggregation else [])
    if secure_aggregation and any(len(g[1]) != b for g in groups):
        raise ValueError("reconstruction: with secure aggregation every hospital contributes "
                         "reconstruction.batch_size records")
    kw = dict(setting=params.setting, lr=train_lr, local_epochs=local_epochs,
              batch_size=min(local_batch_size, b), generator=generator,
              dp_noise_multiplier=dp_noise_multiplier, dp_max_grad_norm=dp_max_grad_norm,
              prune_ratio=prune_ratio, clip_norm=clip_norm)
    updates = torch.stack([client_update(model, global_vec, gx, gy, **kw) for gx, gy in groups])
    n = len(groups)
    observed = updates.sum(0) / n  # the server divides the secure sum by the (known) n
    x_all = np.concatenate([g[0] for g in groups])
    y_all = np.concatenate([g[1] for g in groups])
    rec_kw = {}
    if params.setting == "fedavg":
        rec_kw = dict(local_epochs=local_epochs, batch_size=min(local_batch_size, b) * n)
    t1 = time.perf_counter()
    res = reconstruct(
        model, global_vec, observed, setting=params.setting, lr=train_lr,
        num_records=n * b, input_shape=tuple(xt.shape[1:]), num_classes=num_classes,
        modality=modality, generator=generator, method=params.method,
        iterations=params.iterations, restarts=params.restarts, tv_weight=params.tv_weight,
        l2_weight=params.l2_weight, step_size=params.lr,
        labels=torch.as_tensor(y_all) if params.labels == "known" else None,
        proxy_x=None if proxy_x is None else torch.as_tensor(np.asarray(proxy_x, dtype=np.float32)),
        **rec_kw,
    )
    scores = score_reconstruction(x_all, y_all, res.x_hat, res.y_hat, baseline, modality)
    out = {
        "method": params.method, "setting": params.setting,
        "target_hospital": params.target_hospital, "round": params.round,
        "records": b, "observed": "secure_sum" if secure_aggregation else "update",
        "hospitals_in_sum": n,
        "defenses": {"dp_noise_multiplier": dp_noise_multiplier,
                     "prune_ratio": prune_ratio, "secure_aggregation": secure_aggregation,
                     "client_clip_norm": clip_norm},
    }
    per = scores["per_record"]
    for key in ("psnr", "ssim", "correlation", "mse"):
        for k in (key, "baseline_" + key):
            # the target's records are the first b of the (possibly aggregated) batch
            out[k] = float(np.mean(per[k][:b])) if k in per else None
    ym = res.y_hat.numpy()[np.asarray(scores["assignment"])]
    out["label_accuracy"] = float(np.mean(ym[:b] == y_all[:b]))
    if secure_aggregation:
        out["all_records"] = {k: scores[k] for k in ("psnr", "baseline_psnr", "ssim", "baseline_ssim",
                                                       "correlation", "baseline_correlation", "mse",
                                                       "baseline_mse", "label_accuracy")}
    out["label_count_accuracy"] = scores["label_count_accuracy"]
    out["matching_loss"] = res.loss
    out["attack_seconds"] = time.perf_counter() - t1
    out["seconds"] = time.perf_counter() - t0
    if return_records:
        return out, x_all, res.x_hat.numpy()[np.asarray(scores["assignment"])]
    return out
