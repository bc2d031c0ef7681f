"""How close a reconstruction is, against a baseline guess the server could make anyway.

Per record: MSE and Pearson correlation (every modality) and, for images in [0, 1], PSNR
and SSIM (Wang et al., IEEE TIP 2004; scikit-image's implementation with its default 7x7
uniform window, ``data_range = 1``). PSNR is capped at :data:`PSNR_CAP_DB` so that an exact
copy (MSE 0, or ~1e-14 in float32 arithmetic) gives a finite number a mean and JSON can hold.

With B > 1 records, reconstructions are matched to originals by the assignment minimising
the total MSE (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``); the
reported value is the mean over records. The baseline is ONE record (e.g. the mean record of
data the server holds) compared with every original by the same metric: a reconstruction
means something only where it beats that guess.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity

PSNR_CAP_DB = 100.0


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of two records of the same shape."""
    return float(np.mean((_np(a) - _np(b)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """10 log10(data_range^2 / MSE) in dB, capped at PSNR_CAP_DB (identical records give the
    cap, not inf)."""
    err = mse(a, b)
    if err <= data_range**2 * 10 ** (-PSNR_CAP_DB / 10):
        return PSNR_CAP_DB
    return 10.0 * math.log10(data_range**2 / err)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of two images [C, H, W] (or [H, W]); channels averaged (scikit-image,
    ``channel_axis=0``). Identical images give 1."""
    a, b = _np(a), _np(b)
    if a.ndim == 3 and a.shape[0] == 1:
        a, b = a[0], b[0]
    if a.ndim == 3:
        return float(structural_similarity(a, b, data_range=data_range, channel_axis=0))
    return float(structural_similarity(a, b, data_range=data_range))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two flattened records; 0 when either is constant (undefined)."""
    a, b = _np(a).ravel(), _np(b).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else 0.0


def match_records(x_true, x_hat) -> np.ndarray:
    """assignment[i] = index of the reconstruction matched to original i, minimising the
    summed MSE (Hungarian). x_true [B, ...], x_hat [B, ...]."""
    t = _np(x_true).reshape(len(x_true), -1)
    h = _np(x_hat).reshape(len(x_hat), -1)
    if t.shape != h.shape:
        raise ValueError(f"reconstruction: {h.shape[0]} reconstructions for {t.shape[0]} records")
    cost = ((t[:, None, :] - h[None, :, :]) ** 2).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(len(t), dtype=np.int64)
    out[rows] = cols
    return out


def score_reconstruction(x_true, y_true, x_hat, y_hat, baseline, modality: str) -> dict:
    """Scores of x_hat [B, *shape] (labels y_hat [B]) against x_true [B, *shape], y_true [B].

    baseline: one record [*shape] (or [1, *shape]), the server's guess without the update.
    Returns psnr / baseline_psnr / ssim / baseline_ssim (images; None otherwise),
    correlation / baseline_correlation, mse / baseline_mse (all modalities), label_accuracy
    (matched pairs whose labels agree), label_count_accuracy (multiset overlap of the label
    lists / B, independent of matching), ``assignment`` and ``per_record`` (lists per
    original record, for picking one target record)."""
    if modality not in ("image", "ecg", "tabular"):
        raise ValueError(f"data.modality = {modality!r}: must be image, ecg or tabular")
    xt, xh = _np(x_true), _np(x_hat)
    base = _np(baseline)
    if base.shape == xt.shape[1:]:
        pass
    elif base.shape == (1,) + xt.shape[1:]:
        base = base[0]
    else:
        raise ValueError(f"reconstruction: baseline shape {base.shape} is not one record {xt.shape[1:]}")
    yt = np.asarray(_np(y_true), dtype=np.int64)
    yh = np.asarray(_np(y_hat), dtype=np.int64)
    assign = match_records(xt, xh)
    xm, ym = xh[assign], yh[assign]

    per: dict[str, list[float]] = {}
    fns = {"mse": mse, "correlation": correlation}
    if modality == "image":
        fns = {"psnr": psnr, "ssim": ssim, **fns}
    for key, fn in fns.items():
        per[key] = [fn(t, h) for t, h in zip(xt, xm)]
        per["baseline_" + key] = [fn(t, base) for t in xt]
    out: dict = {}
    for key in ("psnr", "ssim", "correlation", "mse"):
        for k in (key, "baseline_" + key):
            out[k] = float(np.mean(per[k])) if k in per else None
    out["label_accuracy"] = float(np.mean(ym == yt))
    c = max(int(yt.max()), int(yh.max())) + 1
    overlap = np.minimum(np.bincount(yt, minlength=c), np.bincount(yh, minlength=c)).sum()
    out["label_count_accuracy"] = float(overlap / len(yt))
    out["records"] = len(xt)
    out["assignment"] = assign.tolist()
    out["per_record"] = per
    return out
