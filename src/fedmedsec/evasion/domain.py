"""Where an adversarial input may lie: the valid range of each input element and the
elements the adversary may not change, per modality.

A threat model at test time (Goodfellow et al. 2015; Madry et al. 2018) is the set

    S(x) = { x' : ||x' - x||_p <= eps,  lo <= x' <= hi,  x'_j = x_j for immutable j }

with the budget eps in the modality's own units:

- image [N, C, H, W]: pixels in [0, 1]; lo = 0, hi = 1.
- ecg [N, leads, T]: amplitude in the record-standardised units of the loaders (std 1
  per record); lo / hi = the smallest / largest training value over all elements
  (``feature_low.min()``, ``feature_high.max()``), or no bound when they are not given.
- tabular [N, F]: standardised units (training mean 0, std 1 per numeric column); per
  feature lo_j = feature_low[j], hi_j = feature_high[j] (the observed training range, so
  an attacker cannot invent an age of 140), and immutable columns (age, sex: what a
  patient's record cannot be made to say) never move.

The detail implementations get wrong: a clean test record may lie outside the training
range, and then the ball and the box do not intersect. We use the box
[min(lo, x), max(hi, x)] per element, which always contains x, so S(x) is never empty,
x itself is feasible (distance 0), and clamping to the box never increases |x'_j - x_j|:
clipping a point of the eps ball to the box keeps it in the ball for every p-norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["InputDomain", "domain_for", "resolve_immutable", "MODALITIES"]

MODALITIES = ("image", "ecg", "tabular")


@dataclass(frozen=True)
class InputDomain:
    """Valid inputs of one modality.

    low / high: float32 Tensors broadcastable to [*input_shape] (a 0-d Tensor for a single
        range; -inf / +inf for no bound). mutable: bool Tensor broadcastable to
        [*input_shape], False where the adversary may not change the input; None = all.
    """

    modality: str
    low: Tensor
    high: Tensor
    mutable: Tensor | None = None

    def box(self, x0: Tensor) -> tuple[Tensor, Tensor]:
        """(lo, hi) [N, *input_shape] with lo <= x0 <= hi: the range widened to contain x0."""
        lo = torch.minimum(self.low.to(x0.dtype).expand_as(x0), x0)
        hi = torch.maximum(self.high.to(x0.dtype).expand_as(x0), x0)
        return lo, hi

    def mask(self, x0: Tensor) -> Tensor | None:
        """Float 0/1 Tensor [N, *input_shape] (1 = may change), or None when all may."""
        if self.mutable is None:
            return None
        return self.mutable.to(x0.dtype).expand_as(x0)

    @property
    def scalar_range(self) -> tuple[float, float] | None:
        """(lo, hi) when one range holds for every element and nothing is immutable (what
        torchattacks can honour after an affine map), else None."""
        if self.mutable is not None and not bool(self.mutable.all()):
            return None
        if self.low.numel() != 1 or self.high.numel() != 1:
            return None
        return float(self.low), float(self.high)


def resolve_immutable(
    immutable: Sequence[int | str] | np.ndarray | Tensor | None,
    num_features: int,
    feature_names: Sequence[str] | None = None,
) -> np.ndarray | None:
    """bool [F] mask (True = immutable) from a bool mask, feature indices or feature names
    (``evasion.immutable``); None or empty -> None."""
    if immutable is None:
        return None
    arr = np.asarray(immutable.cpu() if isinstance(immutable, Tensor) else immutable)
    if arr.size == 0:
        return None
    if arr.dtype == bool:
        if arr.shape != (num_features,):
            raise ValueError(f"evasion.immutable: a mask needs {num_features} entries, got {arr.shape}")
        return arr.copy()
    mask = np.zeros(num_features, dtype=bool)
    names = list(feature_names) if feature_names is not None else None
    items = list(immutable) if isinstance(immutable, (list, tuple)) else arr.tolist()
    for item in items:
        if isinstance(item, np.generic):
            item = item.item()
        if isinstance(item, str):
            if names is None or item not in names:
                raise ValueError(f"evasion.immutable = {item!r}: not a feature name; choose from "
                                 f"{', '.join(names) if names else '(the data has no feature names)'}")
            mask[names.index(item)] = True
        elif isinstance(item, int) and 0 <= item < num_features:
            mask[item] = True
        else:
            raise ValueError(f"evasion.immutable = {item!r}: must be a feature name or an index in "
                             f"0..{num_features - 1}")
    return mask


def _tensor(a, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(a, dtype=np.float32))
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN")
    return t


def domain_for(
    modality: str,
    input_shape: Sequence[int],
    feature_low=None,
    feature_high=None,
    immutable=None,
    feature_names: Sequence[str] | None = None,
) -> InputDomain:
    """The InputDomain of ``modality`` (see the module docstring). ``feature_low`` /
    ``feature_high``: per-element training min / max [*input_shape] (``FederatedData``
    has them); required for tabular. ``immutable``: tabular only (mask, indices or names)."""
    shape = tuple(int(s) for s in input_shape)
    if modality not in MODALITIES:
        raise ValueError(f"modality = {modality!r}: choose one of {', '.join(MODALITIES)}")
    if immutable is not None and len(np.asarray(immutable).reshape(-1)) and modality != "tabular":
        raise ValueError(f"evasion.immutable: only tabular data has immutable features, not {modality}")
    if modality == "image":
        return InputDomain("image", torch.tensor(0.0), torch.tensor(1.0))
    if modality == "ecg":
        if feature_low is None or feature_high is None:
            return InputDomain("ecg", torch.tensor(-math.inf), torch.tensor(math.inf))
        lo = float(_tensor(feature_low, "feature_low").min())
        hi = float(_tensor(feature_high, "feature_high").max())
        if not lo <= hi:
            raise ValueError(f"feature_low.min() = {lo} exceeds feature_high.max() = {hi}")
        return InputDomain("ecg", torch.tensor(lo), torch.tensor(hi))
    if feature_low is None or feature_high is None:
        raise ValueError("tabular evasion needs feature_low and feature_high (FederatedData has them)")
    lo = _tensor(feature_low, "feature_low").reshape(shape)
    hi = _tensor(feature_high, "feature_high").reshape(shape)
    if (lo > hi).any():
        raise ValueError("feature_low exceeds feature_high for some feature")
    imm = resolve_immutable(immutable, int(np.prod(shape)), feature_names)
    mutable = None if imm is None else torch.from_numpy(~imm).reshape(shape)
    return InputDomain("tabular", lo, hi, mutable)
