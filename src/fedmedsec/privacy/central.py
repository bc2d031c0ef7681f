"""Client-level central DP: DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018).

Each round the server receives n client updates x_1..x_n (rows of ``updates[n, d]``),
clips each to L2 norm S and releases

    Delta = ( sum_i x_i * min(1, S / ||x_i||)  +  N(0, z^2 S^2 I_d) ) / n .

Adding or removing one client changes the clipped sum by at most S, so each round is a
Gaussian mechanism with noise multiplier z on the *sum*, subsampled by the client
sampling of the round (q = clients per round / total clients). Over R rounds the
guarantee is client-level (epsilon, delta)-DP from the RDP accountant of R sampled
Gaussian steps (Opacus ``RDPAccountant``, history [(z, q, R)]).

Assumptions the epsilon rests on (say them where it is reported):
- the aggregate is the equal-weight mean of clipped updates. A robust rule (median, Krum,
  trimmed mean, ...) applied before or instead of the clipped sum has a different and
  generally unbounded sensitivity to one client, so the noise z S does not give the stated
  epsilon; :func:`central_dp_epsilon_or_reason` then returns no number and the reason.
  Weighting by client-reported ``num-examples`` likewise breaks the sensitivity bound.
- the subsampled-Gaussian analysis assumes Poisson sampling of clients with rate q; Flower
  samples a fixed number per round without replacement. Using q = n / N for that is the
  usual approximation, not a proof.
- dividing by the actual n (not the expected q N, McMahan's fixed-denominator estimator)
  is post-processing of the noisy sum only when n is public, which it is when the round's
  sample size is fixed by the config.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .accounting import epsilon_of

__all__ = [
    "clip_updates",
    "dp_fedavg",
    "central_epsilon",
    "central_dp_epsilon_or_reason",
]


def clip_updates(updates: torch.Tensor, clip_norm: float) -> torch.Tensor:
    """updates: Tensor[n, d] -> Tensor[n, d], row i scaled by min(1, S / ||x_i||_2).

    Rows with norm <= S are returned unchanged; the input is not modified. Norms are taken
    in float64 so rows near the float32 limit are clipped, not turned into inf/NaN.
    """
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise ValueError(f"privacy.clip_norm = {clip_norm!r}: must be a finite number > 0")
    if updates.dim() != 2:
        raise ValueError(f"updates must be Tensor[n, d], got shape {tuple(updates.shape)}")
    norms = torch.linalg.vector_norm(updates.double(), dim=1, keepdim=True)
    # factor = min(1, S / ||x||); rows of norm 0 get factor 1 (no division by zero).
    factor = torch.clamp(clip_norm / torch.clamp(norms, min=1e-300), max=1.0)
    return (updates.double() * factor).to(updates.dtype)


def _mean(rows: torch.Tensor) -> torch.Tensor:
    return rows.mean(dim=0)


def dp_fedavg(
    updates: torch.Tensor,
    clip_norm: float,
    noise_multiplier: float,
    generator: torch.Generator,
    aggregate: Callable[[torch.Tensor], torch.Tensor] = _mean,
) -> torch.Tensor:
    """updates: Tensor[n, d] -> Tensor[d] = aggregate(clip_S(x)) + N(0, (z S / n)^2 I).

    McMahan et al., ICLR 2018 (DP-FedAvg). With the default ``aggregate`` (the mean) this
    is (sum_i clip_S(x_i) + N(0, z^2 S^2 I)) / n; the server passes its configured rule
    (the accounting then holds only for rules with the mean's sensitivity, see
    :func:`central_dp_epsilon_or_reason`). The noise is drawn from ``generator`` after the
    rule ran; its per-coordinate std is z S / n.
    """
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(
            f"privacy.noise_multiplier = {noise_multiplier!r}: must be a finite number >= 0"
        )
    clipped = clip_updates(updates, clip_norm)
    n, d = clipped.shape
    if n == 0:
        raise ValueError("dp_fedavg needs at least one update (n = 0)")
    out = aggregate(clipped)
    noise = torch.randn(d, generator=generator, dtype=out.dtype, device=out.device)
    return out + noise * (noise_multiplier * clip_norm / n)


def central_epsilon(
    noise_multiplier: float, sample_rate: float, rounds: int, delta: float
) -> float:
    """Client-level epsilon after ``rounds`` DP-FedAvg rounds (RDP, subsampled Gaussian).

    sample_rate: q = clients per round / total clients. Equals Opacus's RDPAccountant with
    history [(noise_multiplier, q, rounds)]; 0 rounds cost 0, z = 0 costs inf.
    """
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(
            f"privacy.noise_multiplier = {noise_multiplier!r}: must be a finite number >= 0"
        )
    if not (0.0 < sample_rate <= 1.0):
        raise ValueError(f"central DP sample_rate = {sample_rate!r}: must be in (0, 1]")
    if int(rounds) < 0:
        raise ValueError(f"rounds = {rounds!r}: must be >= 0")
    return epsilon_of([(float(noise_multiplier), float(sample_rate), int(rounds))], delta)


def central_dp_epsilon_or_reason(
    rule_name: str,
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    delta: float,
    *,
    mean_sensitivity: bool,
    weighted: bool = False,
    pre_steps: bool = False,
) -> tuple[float | None, str | None]:
    """(epsilon, None) when the DP-FedAvg accounting applies, else (None, reason).

    mean_sensitivity: the rule declares (registry capability) that on updates clipped to
    S its output moves by at most S / n when one client changes, like the mean.
    weighted: the mean weights clients by reported num-examples. pre_steps: bucketing /
    NNM run before the rule (they change the sensitivity).
    """
    if not mean_sensitivity:
        return None, (
            f"central DP epsilon not reported: defense {rule_name!r} is not the mean of "
            "clipped updates, so one client's influence (sensitivity) is not bounded by "
            "clip_norm and the DP-FedAvg accounting does not hold; use record-level "
            "DP-SGD (valid under any defense) or defense.name = \"fedavg\""
        )
    if weighted:
        return None, (
            "central DP epsilon not reported: the mean is weighted by client-reported "
            "num-examples, so one client's influence is not bounded by clip_norm / n"
        )
    if pre_steps:
        return None, "central DP epsilon not reported: defense.pre changes the sensitivity the accounting assumes"
    return central_epsilon(noise_multiplier, sample_rate, rounds, delta), None
