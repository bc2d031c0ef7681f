"""The curious server's reconstruction audit inside a run (``[reconstruction]``, issue 16).

At ``reconstruction.round`` (or the first later round in which the target hospital sends
a valid update) the server inverts the target's update with the run's own client defenses:

- DP-SGD (``privacy.mode = "dp_sgd"``): the target's update is DP-SGD at the sigma that
  hospital trains with (``client.dp_noise_multiplier``, solved from its record count when
  ``privacy.target_epsilon`` is given) and ``privacy.max_grad_norm``;
- pruning: ``privacy.prune_ratio``;
- secure aggregation: the server observes only the sum over the round's hospitals with a
  valid reply, each contributing ``batch_size`` records; with ``privacy.mode = "central"``
  each of those updates is clipped to ``privacy.clip_norm`` by its hospital before masking.
  Central DP's noise is added by the server after it observed the updates (or the sum), so
  it does not stand between the server and the records.

Simulation only: the server builds the audited update itself from the in-process records
of the target (``batch_size`` of them, drawn from the ``RECONSTRUCTION`` stream) and scores
its reconstruction against them. In a deployment the server does receive the target's
update (every update, unless secure aggregation is on) and could run the same inversion,
but it holds no records to score against; the audit is then skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...streams import Stream
from .audit import reconstruction_audit

if TYPE_CHECKING:
    from ...experiment import Setup

__all__ = ["ReconstructionRecords", "curious_server_audit", "is_due", "save_reconstruction", "skipped"]

#: the run directory's figure and arrays
FIGURE = "reconstruction.png"
ARRAYS = "reconstruction.npz"


@dataclass(frozen=True)
class ReconstructionRecords:
    """What the audit recovered, for the figure: originals / reconstructions [m, *shape]
    (the target's ``records`` first, then the other hospitals' under secure aggregation,
    each reconstruction matched to its original), labels int64 [m] (the originals')."""

    originals: np.ndarray
    reconstructions: np.ndarray
    labels: np.ndarray
    modality: str
    records: int


def skipped(reason: str, **extra: Any) -> dict[str, Any]:
    """The ``summary.json["reconstruction"]`` entry of an audit that could not run."""
    return {"skipped": reason, **extra}


def is_due(setup: Setup, server_round: int, valid_ids: Sequence[int], done: bool) -> bool:
    """Audit now? Enabled, not done yet, at or after ``reconstruction.round``, and the
    target sent a valid update this round."""
    r = setup.cfg.reconstruction
    return r.enabled and not done and server_round >= r.round and r.target_hospital in valid_ids


def _records(setup: Setup, pid: int, server_round: int, b: int) -> tuple[np.ndarray, np.ndarray, torch.Generator]:
    h = setup.data.hospitals[pid]
    g = setup.generator(Stream.RECONSTRUCTION, server_round, pid)
    idx = torch.randperm(len(h.y_train), generator=g)[:b].numpy()
    return h.x_train[idx], h.y_train[idx], g


def _baseline(setup: Setup, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(one record, proxy records or None, description): the mean of the records the server
    holds (its test set, else its root set), else a constant mid-range record."""
    d = setup.data
    for x, what in ((d.x_test, "test"), (d.root_x, "root")):
        if x is not None and len(x):
            return x.mean(0).astype(np.float32), x[:256], f"mean of the server's {len(x)} {what} records"
    value = 0.5 if d.modality == "image" else 0.0
    return np.full(shape, value, dtype=np.float32), None, f"constant {value:g} (the server holds no records)"


def curious_server_audit(
    setup: Setup, global_vec: torch.Tensor, server_round: int, participants: Sequence[int],
) -> tuple[dict[str, Any], ReconstructionRecords | None]:
    """The audit of round ``server_round``: the target hospital's update (or, with secure
    aggregation, the sum of the ``participants``' updates) computed from ``global_vec``
    (Tensor[d], the global model broadcast this round) on ``reconstruction.batch_size``
    records each, inverted and scored (:func:`audit.reconstruction_audit`). Returns the
    ``summary.json["reconstruction"]`` dict (or :func:`skipped`) and the records for the
    figure (None when skipped)."""
    cfg = setup.cfg
    r, p, t = cfg.reconstruction, cfg.privacy, cfg.train
    b, target = r.batch_size, r.target_hospital
    ids = [target] + sorted(set(participants) - {target}) if p.secure_aggregation else [target]
    short = [pid for pid in ids if len(setup.data.hospitals[pid].y_train) < b]
    if short:
        pid = short[0]
        have = len(setup.data.hospitals[pid].y_train)
        why = ("the server holds no records of it (a deployment: the audit needs the originals to score)"
               if have == 0 else f"it has {have} training records")
        return skipped(f"reconstruction.batch_size = {b}: hospital {pid} cannot contribute {b} records; {why}",
                       round=server_round), None
    groups = [_records(setup, pid, server_round, b) for pid in ids]
    gen = groups[0][2]
    sigma = None
    if p.mode == "dp_sgd":
        from ...client import dp_noise_multiplier

        sigma = float(dp_noise_multiplier(setup, len(setup.data.hospitals[target].y_train)))
    x0 = groups[0][0]
    baseline, proxy, baseline_note = _baseline(setup, tuple(x0.shape[1:]))
    res, originals, recon = reconstruction_audit(
        setup.new_model(), global_vec, (groups[0][0], groups[0][1]),
        params=r, modality=setup.data.modality, num_classes=setup.data.num_classes,
        train_lr=t.lr, local_epochs=t.local_epochs, local_batch_size=t.batch_size,
        baseline=baseline, generator=gen, proxy_x=proxy,
        others=[(g[0], g[1]) for g in groups[1:]], secure_aggregation=p.secure_aggregation,
        dp_noise_multiplier=sigma, dp_max_grad_norm=getattr(p, "max_grad_norm", 1.0),
        prune_ratio=p.prune_ratio,
        clip_norm=p.clip_norm if p.mode == "central" and p.secure_aggregation else None,
        return_records=True,
    )
    labels = np.concatenate([g[1] for g in groups])
    res.update({
        "round": server_round, "requested_round": r.round,
        "hospital": setup.data.hospitals[target].name, "modality": setup.data.modality,
        "hospitals_in_sum_ids": ids if p.secure_aggregation else [target],
        "baseline": baseline_note,
        "settings": {"method": r.method, "setting": r.setting, "batch_size": b, "labels": r.labels,
                     "iterations": r.iterations, "restarts": r.restarts, "tv_weight": r.tv_weight,
                     "l2_weight": r.l2_weight, "step_size": r.lr, "train_lr": t.lr,
                     "local_epochs": t.local_epochs if r.setting == "fedavg" else 1,
                     "local_batch_size": min(t.batch_size, b) if r.setting == "fedavg" else b,
                     "privacy_mode": p.mode},
        "simulated": "the server computed the target's update from the in-process records",
    })
    if p.mode == "central":
        res["note"] = ("central DP noise is added by the server after it observed the "
                       + ("sum" if p.secure_aggregation else "update") + ": it does not protect against it")
    return res, ReconstructionRecords(originals.astype(np.float32), recon.astype(np.float32), labels,
                                      setup.data.modality, b)


def save_reconstruction(run_dir: str | Path, rec: ReconstructionRecords, max_records: int = 8) -> Path:
    """Write ``reconstruction.png`` (originals above their reconstructions: images as
    images, ECG as traces of the first lead, tables as feature profiles; at most
    ``max_records``, the target's first) and ``reconstruction.npz`` (the arrays) into
    ``run_dir``; returns the PNG's path. The arrays are patient records: keep them in the
    run directory, never in version control."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(run_dir)
    np.savez_compressed(out / ARRAYS, originals=rec.originals, reconstructions=rec.reconstructions,
                        labels=rec.labels, records=np.int64(rec.records))
    m = min(len(rec.originals), max_records)
    if rec.modality == "image":
        fig, axes = plt.subplots(2, m, figsize=(1.6 * m + 0.6, 3.6), squeeze=False)
        for j in range(m):
            for i, x in enumerate((rec.originals[j], rec.reconstructions[j])):
                img = np.clip(x, 0.0, 1.0)
                img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
                ax = axes[i][j]
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
            who = "target" if j < rec.records else "other"
            axes[0][j].set_title(f"{who} #{j} (y={int(rec.labels[j])})", fontsize=8)
        axes[0][0].set_ylabel("original")
        axes[1][0].set_ylabel("reconstruction")
    else:
        fig, axes = plt.subplots(m, 1, figsize=(7.0, 1.6 * m + 0.6), squeeze=False)
        for j in range(m):
            ax = axes[j][0]
            o, h = rec.originals[j], rec.reconstructions[j]
            if rec.modality == "ecg":
                o, h = o.reshape(o.shape[0], -1)[0], h.reshape(h.shape[0], -1)[0]
            else:
                o, h = o.ravel(), h.ravel()
            ax.plot(o, lw=1.0, label="original")
            ax.plot(h, lw=1.0, ls="--", label="reconstruction")
            who = "target" if j < rec.records else "other"
            ax.set_title(f"{who} record #{j} (y={int(rec.labels[j])})", fontsize=8)
        axes[0][0].legend(fontsize=7, loc="upper right")
        axes[-1][0].set_xlabel("time (samples), first lead" if rec.modality == "ecg" else "feature")
    fig.tight_layout()
    path = out / FIGURE
    fig.savefig(path)
    plt.close(fig)
    return path
