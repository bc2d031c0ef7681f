"""Privacy accounting shared by DP-SGD (record level) and DP-FedAvg (client level).

Both mechanisms are compositions of the *sampled Gaussian mechanism* (SGM): each step
samples every unit (record, or client) independently with probability ``q`` (Poisson
sampling), sums their contributions clipped to L2 norm ``C`` and adds ``N(0, sigma^2 C^2 I)``.
Its Renyi-DP at order alpha is computed by Mironov, Talwar and Zhang (2019, "Renyi
Differential Privacy of the Sampled Gaussian Mechanism"); RDP composes additively over
steps and converts to (epsilon, delta)-DP (Mironov 2017, with the tighter conversion of
Balle et al. 2020 that Opacus uses). We do not re-implement any of it: Opacus's
``RDPAccountant`` does it, and this module only keeps its *history* across rounds.

A history is a list of ``(noise_multiplier, sample_rate, steps)`` tuples, exactly
``opacus.accountants.RDPAccountant.history``. A new ``PrivacyEngine`` per federated round
would report the epsilon of that round only; here the caller keeps the history of every
round and the epsilon is always that of the whole history (pitfall in REFERENCES.md).

Importing Opacus calls ``logging.basicConfig`` (opacus/utils/module_utils.py), which adds a
stderr handler to the root logger when it has none, so flwr's records would be printed
twice and levels may change. ``import_opacus`` imports it once with the root and flwr
loggers' handlers and levels saved and restored, and quiets Opacus to WARNING. Import
:mod:`fedmedsec.privacy` before anything else imports Opacus for this to take effect.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Iterable

import numpy as np

History = list[tuple[float, float, int]]


def import_opacus():
    """Import opacus without letting it reconfigure the root / flwr loggers; return it."""
    root = logging.getLogger()
    watched = [root, logging.getLogger("flwr")]
    saved = [(lg, lg.level, list(lg.handlers)) for lg in watched]
    try:
        import opacus  # noqa: F401
        import opacus.accountants  # noqa: F401
        import opacus.accountants.utils  # noqa: F401
        import opacus.validators  # noqa: F401
    finally:
        for lg, level, handlers in saved:
            lg.setLevel(level)
            for h in list(lg.handlers):
                if h not in handlers:
                    lg.removeHandler(h)
        logging.getLogger("opacus").setLevel(logging.WARNING)
        logging.getLogger("opacus.utils.module_utils").setLevel(logging.WARNING)
    return opacus


import_opacus()
from opacus.accountants import RDPAccountant  # noqa: E402
from opacus.accountants.utils import get_noise_multiplier  # noqa: E402


def _check_delta(delta: float, key: str = "privacy.delta") -> None:
    if not (isinstance(delta, (int, float)) and 0.0 < delta < 1.0):
        raise ValueError(f"{key} = {delta!r}: must be in (0, 1)")


def validate_history(history: Iterable[tuple[float, float, int]]) -> History:
    """Return the history as a new list of (float, float, int), refusing invalid entries."""
    out: History = []
    for entry in history:
        if len(entry) != 3:
            raise ValueError(
                f"privacy history entry {entry!r}: must be (noise_multiplier, sample_rate, steps)"
            )
        sigma, q, steps = float(entry[0]), float(entry[1]), int(entry[2])
        if not (sigma >= 0.0 and math.isfinite(sigma)):
            raise ValueError(f"privacy history noise_multiplier = {sigma!r}: must be >= 0")
        if not (0.0 < q <= 1.0):
            raise ValueError(f"privacy history sample_rate = {q!r}: must be in (0, 1]")
        if steps < 0:
            raise ValueError(f"privacy history steps = {steps!r}: must be >= 0")
        out.append((sigma, q, steps))
    return out


def rdp_accountant(history: Iterable[tuple[float, float, int]]) -> RDPAccountant:
    """An Opacus ``RDPAccountant`` whose history is a copy of ``history``."""
    acc = RDPAccountant()
    acc.history = [h for h in validate_history(history) if h[2] > 0]
    return acc


def epsilon_of(history: Iterable[tuple[float, float, int]], delta: float) -> float:
    """epsilon of the composition of every SGM step in ``history`` at ``delta``.

    Equals ``RDPAccountant.get_epsilon(delta)`` after the same steps (same default RDP
    orders). An empty history costs 0; a step with ``noise_multiplier == 0`` costs inf.
    """
    _check_delta(delta)
    hist = validate_history(history)
    live = [h for h in hist if h[2] > 0]
    if not live:
        return 0.0
    if any(sigma == 0.0 for sigma, _, _ in live):
        return math.inf
    return _epsilon_cached(tuple(merge_history(live)), float(delta))


def _epsilon_cached(merged: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """What ``RDPAccountant.get_privacy_spent`` computes, with the per-step RDP of each
    (sigma, q) cached: the RDP of T steps is T times one step's, so later rounds (more
    steps, same sigma and q) cost no new RDP evaluation (0.1-0.4 s each on this machine,
    Opacus evaluates fractional orders in pure Python)."""
    from opacus.accountants.analysis import rdp as analysis

    alphas = RDPAccountant.DEFAULT_ALPHAS
    rdp = sum(steps * _rdp_one_step(sigma, q) for sigma, q, steps in merged)
    eps, _ = analysis.get_privacy_spent(orders=alphas, rdp=rdp, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=4096)
def _rdp_one_step(sigma: float, q: float) -> np.ndarray:
    from opacus.accountants.analysis import rdp as analysis

    return np.asarray(analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1,
                                           orders=RDPAccountant.DEFAULT_ALPHAS), dtype=np.float64)


def merge_history(history: Iterable[tuple[float, float, int]]) -> History:
    """Sum the steps of entries with the same (sigma, q), in first-seen order.

    Exact for the RDP accountant: the RDP of T steps is T times that of one step and
    composition is additive (order-free). Keeps the cost of ``epsilon_of`` independent of
    the number of rounds (each distinct (sigma, q) costs ~0.1 s of RDP evaluation).
    """
    merged: dict[tuple[float, float], int] = {}
    for sigma, q, steps in validate_history(history):
        merged[(sigma, q)] = merged.get((sigma, q), 0) + steps
    return [(sigma, q, steps) for (sigma, q), steps in merged.items()]


def noise_for_target_epsilon(
    target_epsilon: float, delta: float, sample_rate: float, total_steps: int
) -> float:
    """Smallest sigma (to Opacus's 0.01 epsilon tolerance) such that ``total_steps`` SGM
    steps at ``sample_rate`` cost at most ``target_epsilon`` at ``delta`` (RDP accountant).

    For DP-SGD over R rounds of E local epochs: ``total_steps = R * E * int(1 / q)``,
    ``q = batch_size / N`` (the steps Opacus's Poisson sampler makes per epoch).
    Wraps ``opacus.accountants.utils.get_noise_multiplier``.
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ValueError(f"privacy.target_epsilon = {target_epsilon!r}: must be > 0 and finite")
    _check_delta(delta)
    if not (0.0 < sample_rate <= 1.0):
        raise ValueError(f"privacy sample_rate = {sample_rate!r}: must be in (0, 1]")
    if int(total_steps) < 1:
        raise ValueError(f"privacy total_steps = {total_steps!r}: must be >= 1")
    try:
        with warnings.catch_warnings():
            # the bisection probes tiny sigmas whose optimum is the largest RDP order
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=float(target_epsilon),
                    target_delta=float(delta),
                    sample_rate=float(sample_rate),
                    steps=int(total_steps),
                    accountant="rdp",
                )
            )
    except ValueError as e:  # Opacus: "The privacy budget is too low."
        raise ValueError(
            f"privacy.target_epsilon = {target_epsilon!r}: unreachable with delta={delta}, "
            f"sample_rate={sample_rate}, {total_steps} steps ({e})"
        ) from None
    return sigma
