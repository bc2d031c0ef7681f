"""Membership inference against a final model: what an honest-but-curious party learns.

Two attacks, both reported as Carlini et al. (S&P 2022, "Membership inference attacks
from first principles") recommend: ROC AUC and the TPR at a low FPR (1%), on a balanced
set of members (training records) and non-members (same distribution, never trained on).

- Loss threshold (Yeom, Giacomelli, Fredrikson, Jha, CSF 2018): score(x, y) = -loss(f(x), y);
  predict "member" when the score exceeds a threshold. Sweeping the threshold gives the ROC.
- Offline LiRA (Carlini et al. 2022, Sec. IV-C "offline"): the attacker trains K shadow
  models on random halves of a population it holds that excludes the targets, so every
  shadow is OUT for every target. For each target it fits N(mu_out, sigma_out^2) to the
  shadows' logit-scaled confidence phi = log(p_y / (1 - p_y)) and scores the target model's
  phi_obs by the one-sided test Lambda = Pr[Z < phi_obs], Z ~ N(mu_out, sigma_out^2).
  With few shadows the paper uses one global sigma_out (the "fixed variance" variant);
  that is the default here. Data augmentation queries of the paper are not used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

__all__ = [
    "MIAResult",
    "roc_summary",
    "loss_threshold_attack",
    "balanced_members",
    "per_example_losses",
    "logit_confidence",
    "mia_evaluate",
    "lira_offline",
    "hospital_audit",
    "loss_histogram",
    "roc_from_histograms",
    "histogram_of",
]


@dataclass(frozen=True)
class MIAResult:
    """auc: ROC AUC of the membership score (0.5 = guessing). tpr_at_1pct_fpr: TPR at
    FPR = 0.01, linearly interpolated on the ROC. n_members / n_nonmembers: scored records.
    """

    auc: float
    tpr_at_1pct_fpr: float
    n_members: int
    n_nonmembers: int
    attack: str = "loss_threshold"


def roc_summary(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, attack: str, fpr_at: float = 0.01
) -> MIAResult:
    """ROC AUC and TPR at ``fpr_at`` for scores where higher means "member".

    The TPR at a fixed FPR is read off sklearn's ROC (step points joined linearly), the
    way Carlini et al. 2022 report it; with m non-members, FPRs below 1/m are not resolved.
    """
    ms = np.asarray(member_scores, dtype=np.float64).ravel()
    ns = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if ms.size == 0 or ns.size == 0:
        raise ValueError(
            f"membership inference needs members and non-members, got {ms.size} and {ns.size}"
        )
    if not (np.all(np.isfinite(ms)) and np.all(np.isfinite(ns))):
        raise ValueError("membership scores must be finite")
    labels = np.concatenate([np.ones(ms.size), np.zeros(ns.size)])
    scores = np.concatenate([ms, ns])
    fpr, tpr, _ = roc_curve(labels, scores)
    return MIAResult(
        auc=float(roc_auc_score(labels, scores)),
        tpr_at_1pct_fpr=float(np.interp(fpr_at, fpr, tpr)),
        n_members=int(ms.size),
        n_nonmembers=int(ns.size),
        attack=attack,
    )


def loss_threshold_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> MIAResult:
    """Yeom et al. 2018 loss attack: score = -loss; members have lower loss.

    member_losses: [m], nonmember_losses: [m'] per-example losses on the attacked model.
    """
    return roc_summary(
        -np.asarray(member_losses, dtype=np.float64),
        -np.asarray(nonmember_losses, dtype=np.float64),
        attack="loss_threshold",
    )


def balanced_members(
    n_members: int, n_nonmembers: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (members [k], non-members [k]) with k = min(n_members, n_nonmembers),
    drawn without replacement by ``rng``, so AUC and TPR@FPR compare equal-sized sets.
    """
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError(
            f"membership inference needs members and non-members, got {n_members} and "
            f"{n_nonmembers}"
        )
    k = min(int(n_members), int(n_nonmembers))
    mi = np.sort(rng.choice(int(n_members), size=k, replace=False))
    ni = np.sort(rng.choice(int(n_nonmembers), size=k, replace=False))
    return mi, ni


def _logits(model: nn.Module, x: np.ndarray, batch_size: int) -> torch.Tensor:
    """Eval-mode logits [N, C] in batches; the model's train/eval mode is restored."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs = [model(xt[i : i + batch_size]) for i in range(0, xt.shape[0], batch_size)]
    finally:
        model.train(was_training)
    if not outs:
        return torch.empty(0, 0)
    return torch.cat(outs).double()


def per_example_losses(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512
) -> np.ndarray:
    """Cross-entropy loss of each record: [N] = -log softmax(f(x_i))[y_i] (eval mode)."""
    logits = _logits(model, x, batch_size)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if logits.shape[0] == 0:
        return np.zeros(0)
    return nn.functional.cross_entropy(logits, yt, reduction="none").numpy()


def logit_confidence(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512
) -> np.ndarray:
    """phi_i = log(p_y / (1 - p_y)) of the true class, [N] (Carlini et al. 2022, Sec. IV-B).

    Computed stably from logits z as z_y - logsumexp_{j != y} z_j (same quantity).
    """
    logits = _logits(model, x, batch_size)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if logits.shape[0] == 0:
        return np.zeros(0)
    zy = logits.gather(1, yt[:, None]).squeeze(1)
    others = logits.scatter(1, yt[:, None], float("-inf"))
    return (zy - torch.logsumexp(others, dim=1)).numpy()


def mia_evaluate(
    model: nn.Module,
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    batch_size: int = 512,
) -> dict:
    """Loss-threshold MIA on a balanced sample; returns
    {"attack": "loss_threshold", "auc", "tpr_at_1pct_fpr", "n" (records per side)}.

    members: (x, y) training records of the model; nonmembers: (x, y) held out.
    """
    (xm, ym), (xn, yn) = members, nonmembers
    mi, ni = balanced_members(len(ym), len(yn), rng)
    res = loss_threshold_attack(
        per_example_losses(model, np.asarray(xm)[mi], np.asarray(ym)[mi], batch_size),
        per_example_losses(model, np.asarray(xn)[ni], np.asarray(yn)[ni], batch_size),
    )
    return {
        "attack": res.attack,
        "auc": res.auc,
        "tpr_at_1pct_fpr": res.tpr_at_1pct_fpr,
        "n": res.n_members,
    }


#: loss histograms for merging membership scores across hospitals: log10(loss) in
#: [LOSS_LOG_LOW, LOSS_LOG_HIGH] on LOSS_BINS equal bins (0.004 decades each)
LOSS_BINS = 4096
LOSS_LOG_LOW, LOSS_LOG_HIGH = -12.0, 4.0


def loss_histogram(losses: np.ndarray) -> np.ndarray:
    """int64 [LOSS_BINS] counts of per-example losses on the log10 grid (clipped to it)."""
    ll = np.log10(np.clip(np.asarray(losses, dtype=np.float64), 10**LOSS_LOG_LOW, 10**LOSS_LOG_HIGH))
    b = np.floor((ll - LOSS_LOG_LOW) / (LOSS_LOG_HIGH - LOSS_LOG_LOW) * LOSS_BINS).astype(np.int64)
    return np.bincount(np.clip(b, 0, LOSS_BINS - 1), minlength=LOSS_BINS)


def roc_from_histograms(h_members: np.ndarray, h_nonmembers: np.ndarray) -> MIAResult:
    """The loss-threshold attack's ROC from merged loss histograms (score = -loss: bins
    of lower loss score higher); equal to the attack on the pooled losses up to the bin
    width. Raises ValueError when a side is empty."""
    hm, hn = np.asarray(h_members, dtype=np.int64), np.asarray(h_nonmembers, dtype=np.int64)
    if hm.sum() == 0 or hn.sum() == 0:
        raise ValueError("membership inference needs members and non-members")
    score = -np.arange(LOSS_BINS, dtype=np.float64)
    keep_m, keep_n = hm > 0, hn > 0
    scores = np.concatenate([score[keep_m], score[keep_n]])
    labels = np.concatenate([np.ones(keep_m.sum()), np.zeros(keep_n.sum())])
    weights = np.concatenate([hm[keep_m], hn[keep_n]]).astype(np.float64)
    fpr, tpr, _ = roc_curve(labels, scores, sample_weight=weights)
    return MIAResult(auc=float(roc_auc_score(labels, scores, sample_weight=weights)),
                     tpr_at_1pct_fpr=float(np.interp(0.01, fpr, tpr)),
                     n_members=int(hm.sum()), n_nonmembers=int(hn.sum()))


def hospital_audit(model: nn.Module, members: tuple[np.ndarray, np.ndarray],
                   nonmembers: tuple[np.ndarray, np.ndarray], batch_size: int = 512) -> dict:
    """Loss-threshold membership inference of ``model`` against one hospital's own
    training records (members) and its own test split (non-members), computed where the
    records are; only the scores and the loss histograms (counts, for the server's merge)
    leave. AUC / TPR None when a side has fewer than 5 records."""
    lm = per_example_losses(model, *members, batch_size=batch_size)
    ln = per_example_losses(model, *nonmembers, batch_size=batch_size)
    out = {"n_members": int(len(lm)), "n_nonmembers": int(len(ln)), "auc": None, "tpr_at_1pct_fpr": None}
    if min(len(lm), len(ln)) >= 5 and np.isfinite(lm).all() and np.isfinite(ln).all():
        res = loss_threshold_attack(lm, ln)
        out.update(auc=res.auc, tpr_at_1pct_fpr=res.tpr_at_1pct_fpr)
    hm = loss_histogram(lm[np.isfinite(lm)])
    hn = loss_histogram(ln[np.isfinite(ln)])
    for key, h in (("members", hm), ("nonmembers", hn)):
        nz = np.flatnonzero(h)
        out[f"hist_{key}_index"] = nz.tolist()
        out[f"hist_{key}_count"] = h[nz].tolist()
    return out


def histogram_of(audit: dict, key: str) -> np.ndarray:
    """The dense [LOSS_BINS] histogram of ``hospital_audit``'s sparse ``key`` side."""
    h = np.zeros(LOSS_BINS, dtype=np.int64)
    idx = np.asarray(audit[f"hist_{key}_index"], dtype=np.int64)
    cnt = np.asarray(audit[f"hist_{key}_count"], dtype=np.int64)
    if idx.shape != cnt.shape or (idx.size and (idx.min() < 0 or idx.max() >= LOSS_BINS)) or (cnt < 0).any():
        raise ValueError("malformed loss histogram")
    np.add.at(h, idx, cnt)
    return h


def lira_offline(
    target_model: nn.Module,
    x_targets: np.ndarray,
    y_targets: np.ndarray,
    is_member: np.ndarray,
    population_size: int,
    train_shadow: Callable[[np.ndarray], nn.Module],
    rng: np.random.Generator,
    *,
    k: int = 8,
    fixed_variance: bool = True,
    batch_size: int = 512,
) -> tuple[MIAResult, np.ndarray]:
    """Offline LiRA (Carlini et al. 2022). Returns (MIAResult, scores [T]).

    target_model: the attacked model. x_targets [T, ...], y_targets [T]: the records whose
    membership is tested; is_member [T] bool: ground truth, used only to score the attack.
    population_size: P, the number of records the attacker holds, disjoint from the targets.
    train_shadow(idx) -> nn.Module trains a fresh model on the attacker's records ``idx``
    (int array into its population, |idx| = P // 2), with the same recipe as the target.

    Score of target t: (phi_obs - mu_t) / sigma, where mu_t, sigma_t are the mean and std
    of phi over the K OUT shadows (sigma: global std over all targets if fixed_variance).
    Lambda = Phi(score) is the paper's one-sided likelihood; ranking by the z-score is the
    same and does not saturate at 1 in floating point.
    """
    if k < 2:
        raise ValueError(f"mia.shadow_models = {k!r}: must be >= 2 (a variance is fitted)")
    if population_size < 2:
        raise ValueError(f"LiRA population_size = {population_size!r}: must be >= 2")
    member = np.asarray(is_member, dtype=bool).ravel()
    if member.size != len(y_targets):
        raise ValueError(f"is_member has {member.size} entries for {len(y_targets)} targets")
    half = population_size // 2
    phis = np.empty((k, member.size))
    for s in range(k):
        idx = np.sort(rng.choice(population_size, size=half, replace=False))
        shadow = train_shadow(idx)
        phis[s] = logit_confidence(shadow, x_targets, y_targets, batch_size)
    mu = phis.mean(axis=0)
    if fixed_variance:
        # one pooled std for all targets: sqrt of the mean per-target variance
        sigma = np.full_like(mu, np.sqrt(np.mean(phis.var(axis=0, ddof=1))))
    else:
        sigma = phis.std(axis=0, ddof=1)
    sigma = np.maximum(sigma, 1e-6)
    obs = logit_confidence(target_model, x_targets, y_targets, batch_size)
    scores = (obs - mu) / sigma
    res = roc_summary(scores[member], scores[~member], attack="lira_offline")
    return res, scores
