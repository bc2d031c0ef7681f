"""Feature squeezing (Xu, Evans and Qi, NDSS 2018): detect adversarial inputs by how much
the model's prediction moves when the input is "squeezed" (its needless precision
removed).

    score(x) = max_k || softmax(f(x)) - softmax(f(s_k(x))) ||_1

over the squeezers s_k; x is flagged when score(x) > T, with T set so that at most a
fraction ``fpr`` (default 5%, the paper's choice) of clean calibration inputs is flagged.
The paper's squeezers are images' bit-depth reduction (1 bit for MNIST, 5 bits for CIFAR-10
and ImageNet) and 2x2 median smoothing; the joint detector takes the maximum L1 distance.

Per modality here (``squeezers_for``):
- image [N, C, H, W] in [0, 1]: bit depth b (default 5): round(x (2^b - 1)) / (2^b - 1);
  median smoothing over size x size pixels (default 2, as in the paper; scipy's
  ``median_filter``, reflect padding).
- ecg [N, leads, T]: median smoothing over ``ecg_median`` samples in time per lead
  (default 3: 30 ms at 100 Hz, narrower than a QRS complex), the 1-D analogue of the
  paper's median filter.
- tabular [N, F] (standardised units): rounding every feature to a grid of
  ``tabular_grid`` standard deviations (default 0.25; one-hot 0/1 columns stay put when
  the grid divides 1), the analogue of bit-depth reduction. Ours, not the paper's.
The detector is not differentiable and assumes a non-adaptive attacker, as in the paper
(an adaptive attacker who knows the squeezers can evade it: He et al., WOOT 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import median_filter
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from .attacks import attack_mode

__all__ = [
    "Squeezer",
    "DetectionResult",
    "bit_depth",
    "median_smooth",
    "grid_round",
    "squeezers_for",
    "squeezing_scores",
    "fit_threshold",
    "feature_squeezing_detection",
]

Squeezer = tuple[str, Callable[[Tensor], Tensor]]


def bit_depth(x: Tensor, bits: int) -> Tensor:
    """Reduce [0, 1] inputs to ``bits`` bits: round(x (2^bits - 1)) / (2^bits - 1)."""
    levels = 2 ** int(bits) - 1
    return torch.round(x.clamp(0.0, 1.0) * levels) / levels


def median_smooth(x: Tensor, size: int, dims: int) -> Tensor:
    """Median filter of width ``size`` over the last ``dims`` axes of x [N, ...] (scipy,
    reflect padding; even sizes as scipy defines them)."""
    sz = (1,) * (x.dim() - dims) + (int(size),) * dims
    out = median_filter(x.detach().cpu().numpy(), size=sz, mode="reflect")
    return torch.from_numpy(np.ascontiguousarray(out)).to(x.dtype)


def grid_round(x: Tensor, step: float) -> Tensor:
    """Round every entry to the nearest multiple of ``step``."""
    return torch.round(x / step) * step


def squeezers_for(
    modality: str, *, bits: int = 5, median_size: int = 2, ecg_median: int = 3,
    tabular_grid: float = 0.25,
) -> list[Squeezer]:
    """The squeezers of ``modality`` (module docstring), as (name, function) pairs."""
    if modality == "image":
        return [(f"bit_depth_{bits}", lambda x: bit_depth(x, bits)),
                (f"median_{median_size}x{median_size}", lambda x: median_smooth(x, median_size, 2))]
    if modality == "ecg":
        return [(f"median_{ecg_median}", lambda x: median_smooth(x, ecg_median, 1))]
    if modality == "tabular":
        if not tabular_grid > 0:
            raise ValueError(f"tabular_grid = {tabular_grid!r}: must be > 0")
        return [(f"grid_{tabular_grid:g}", lambda x: grid_round(x, tabular_grid))]
    raise ValueError(f"modality = {modality!r}: choose image, ecg or tabular")


@torch.no_grad()
def squeezing_scores(model: nn.Module, x: Tensor, squeezers: Sequence[Squeezer],
                     batch_size: int = 512) -> Tensor:
    """score [N] = max over squeezers of the L1 distance between softmax outputs."""
    x = torch.as_tensor(x).float()
    if not squeezers:
        raise ValueError("feature squeezing needs at least one squeezer")
    out = []
    with attack_mode(model):
        for s in range(0, x.shape[0], batch_size):
            xb = x[s: s + batch_size]
            p = torch.softmax(model(xb), dim=1)
            d = torch.stack([(p - torch.softmax(model(fn(xb)), dim=1)).abs().sum(1)
                             for _, fn in squeezers])
            out.append(d.max(0).values)
    return torch.cat(out) if out else torch.zeros(0)


def fit_threshold(clean_scores: Tensor | np.ndarray, fpr: float = 0.05) -> float:
    """The smallest threshold T among the clean scores with #{score > T} <= floor(fpr n)
    (so the clean false-positive rate is at most ``fpr``); +inf for no scores."""
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"evasion.detector_fpr = {fpr!r}: must be in [0, 1)")
    s = np.sort(np.asarray(clean_scores, dtype=np.float64).reshape(-1))
    n = len(s)
    if n == 0:
        return math.inf
    k = int(math.floor(fpr * n + 1e-9))  # clean scores allowed above T
    return float(s[n - k - 1])


@dataclass(frozen=True)
class DetectionResult:
    """threshold: T fitted on the calibration scores. false_positives / n_calibration:
    clean calibration inputs above T. detected / n_adversarial: adversarial inputs above T
    (detection_rate = their ratio, nan when none). auc: ROC AUC of the score for
    adversarial (1) vs clean (0) inputs of the evaluated set (nan without both)."""

    threshold: float
    fpr: float
    detected: int
    n_adversarial: int
    false_positives: int
    n_calibration: int
    detection_rate: float
    auc: float


def feature_squeezing_detection(
    model: nn.Module, x_clean: Tensor, x_adv: Tensor, *, modality: str | None = None,
    squeezers: Sequence[Squeezer] | None = None, fpr: float = 0.05,
    x_calibration: Tensor | None = None,
) -> DetectionResult:
    """Detect ``x_adv`` [M, ...] with feature squeezing at false-positive rate ``fpr``.

    T is fitted on ``x_calibration`` (clean inputs; default ``x_clean``, then the FPR is
    in-sample). The AUC compares the scores of ``x_adv`` with those of ``x_clean``."""
    sq = squeezers if squeezers is not None else squeezers_for(modality or "")
    s_clean = squeezing_scores(model, x_clean, sq)
    s_cal = s_clean if x_calibration is None else squeezing_scores(model, x_calibration, sq)
    s_adv = squeezing_scores(model, x_adv, sq)
    t = fit_threshold(s_cal, fpr)
    det = int((s_adv > t).sum())
    fp = int((s_cal > t).sum())
    if len(s_adv) and len(s_clean):
        labels = np.r_[np.zeros(len(s_clean)), np.ones(len(s_adv))]
        auc = float(roc_auc_score(labels, np.r_[s_clean.numpy(), s_adv.numpy()]))
    else:
        auc = float("nan")
    return DetectionResult(
        threshold=t, fpr=fpr, detected=det, n_adversarial=int(len(s_adv)), false_positives=fp,
        n_calibration=int(len(s_cal)), detection_rate=det / len(s_adv) if len(s_adv) else float("nan"),
        auc=auc,
    )
