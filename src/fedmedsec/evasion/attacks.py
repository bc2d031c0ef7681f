"""Test-time evasion attacks on a trained classifier: FGSM, PGD (L-inf, L2), APGD.

All attacks take a model f: [N, *input_shape] -> logits [N, C], clean inputs x (float32
[N, *input_shape]), labels y (int64 [N]) and an :class:`~.domain.InputDomain`, and return
x_adv in S(x) = {||x_adv - x||_p <= eps, lo <= x_adv <= hi, immutable entries unchanged}
(see domain.py). Untargeted attacks maximise the loss of the true label; targeted ones
(``targeted_label = t``) minimise the loss of t (success = argmax f(x_adv) = t, e.g.
malignant -> benign, the missed diagnosis).

- FGSM (Goodfellow, Shlens, Szegedy, ICLR 2015): x' = P(x + eps * sign(grad_x L(f(x), y))),
  one step, no random start. For L2 the "fast gradient method" x + eps * g / ||g||_2.
- PGD (Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018): uniform random start in the
  ball, then ``steps`` iterations x <- P(x + alpha * sign(g)) (L-inf) or
  P(x + alpha * g / ||g||_2) (L2), alpha = 2.5 * eps / steps by default (the rule of the
  Madry lab's ``robustness`` library, so the path can cross the ball; the paper itself used
  fixed steps, 40 x 0.01 at eps = 0.3 on MNIST, 7 x 2/255 at 8/255 on CIFAR-10); the last
  iterate is returned, as in the paper.
- APGD (Croce and Hein, ICML 2020, Algorithm 1): PGD with momentum (alpha = 0.75), step
  size eta starting at 2 eps and halved at checkpoints w_j (p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) of the steps) when (1) fewer than
  rho = 0.75 of the steps since the last checkpoint increased the loss, or (2) eta was not
  reduced at the last checkpoint and the best loss did not improve since; at a reduction
  the iterate restarts from the best point. Losses: cross-entropy (APGD-CE) or the
  Difference of Logits Ratio DLR(x, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
  (z sorted decreasingly: pi1 the largest), which needs C >= 3; its targeted version
  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) needs C >= 4. With C = 2 the DLR is not
  defined and not needed: CE = softplus(-(z_y - z_other)) is a strictly increasing function
  of the negative margin, so every step direction (sign or normalised gradient: a positive
  scalar factor) and every "did the loss increase" comparison of APGD-CE is the one of APGD
  on the margin loss; the scale invariance DLR buys is already there. Returned: the first
  iterate that succeeds, else the highest-loss iterate. One detail implementations get
  wrong: checkpoint condition (1) counts increases f(x^(i+1)) > f(x^(i)) over the steps
  since the last checkpoint, the first one compared with the starting point (the public
  code compares it with an unfilled zero entry); we follow the paper (strict "<").

Backends. torchattacks 3.5.1 (imported without torchvision; its classes used here, FGSM,
PGD, PGDL2, APGD and AutoAttack, depend only on torch) assumes inputs in [0, 1] of shape
[N, C, H, W]. For a domain with one range [lo, hi] and nothing immutable (images; ECG) we
give it the model u -> f(lo + (hi - lo) u), u in [0, 1], reshaped to 4-D ([leads, 1, T]
for ECG), and the budget eps_u = eps / (hi - lo) (a scalar affine map scales L-inf and L2
norms alike, so eps keeps the modality's units). An unbounded range (ECG without
feature_low/high) becomes [min x - eps, max x + eps], where the clamp never binds.
torchattacks cannot honour per-feature boxes, masks, a chosen target for APGD, or a
caller's generator (it draws from the global torch RNG; we run it inside
``torch.random.fork_rng`` seeded from the caller's generator, so the global state is left
as it was). The hand-written reference implementations below handle all of that and are
used for tabular data, targeted APGD, L2 FGSM and adversarial training.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import NoParams, Registry
from .domain import InputDomain

__all__ = [
    "Norm",
    "EVASION_ATTACKS",
    "ATTACK_NAMES",
    "fgsm",
    "pgd",
    "apgd",
    "project",
    "run_attack",
    "check_attacks",
    "attack_mode",
    "default_step_size",
]

Norm = Literal["linf", "l2"]
NORMS = ("linf", "l2")
_TINY = 1e-12


# --------------------------------------------------------------------------- helpers


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """[N] -> [N, 1, ..., 1] matching x."""
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def _norms(t: Tensor) -> Tensor:
    """Per-example L2 norm [N] of t [N, ...]."""
    return t.flatten(1).norm(dim=1)


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"evasion.norm = {norm!r}: choose one of {', '.join(NORMS)}")


def _check_eps(eps: float) -> None:
    if not (eps >= 0.0 and eps < float("inf")):
        raise ValueError(f"evasion.eps = {eps!r}: must be a finite number >= 0")


def default_step_size(eps: float, steps: int) -> float:
    """alpha = 2.5 * eps / steps (the ``robustness`` library's rule for Madry et al.'s PGD)."""
    return 2.5 * eps / max(int(steps), 1)


def project(
    x_adv: Tensor, x0: Tensor, eps: float | Tensor, norm: str,
    lo: Tensor, hi: Tensor, mask: Tensor | None,
) -> Tensor:
    """Into S(x0): zero the immutable entries of delta = x_adv - x0, shrink delta into the
    eps ball (L-inf: clamp each entry; L2: scale by min(1, eps / ||delta||)), then clamp to
    the box [lo, hi] (which contains x0, so the clamp keeps the point in the ball).
    eps: a float or a Tensor [N]."""
    d = x_adv - x0
    if mask is not None:
        d = d * mask
    e = eps if not isinstance(eps, Tensor) else _bcast(eps.to(x0.dtype), x0)
    if norm == "linf":
        d = torch.maximum(torch.minimum(d, torch.as_tensor(e, dtype=x0.dtype)),
                          -torch.as_tensor(e, dtype=x0.dtype))
    else:
        n = _bcast(_norms(d), x0)
        d = d * torch.clamp(torch.as_tensor(e, dtype=x0.dtype) / (n + _TINY), max=1.0)
    return torch.maximum(torch.minimum(x0 + d, hi), lo)


def _direction(g: Tensor, norm: str, mask: Tensor | None) -> Tensor:
    """Steepest ascent direction of unit norm: sign(g) (L-inf) or g / ||g||_2 (L2), zero on
    immutable entries (the L2 norm is taken over the mutable ones)."""
    if mask is not None:
        g = g * mask
    if norm == "linf":
        return g.sign()
    return g / (_bcast(_norms(g), g) + _TINY)


def _per_example_loss(logits: Tensor, y: Tensor, target: Tensor | None, kind: str) -> Tensor:
    """The loss each attack maximises, [N]: CE(z, y) or -CE(z, t) targeted; DLR variants."""
    if kind == "ce":
        if target is None:
            return F.cross_entropy(logits, y, reduction="none")
        return -F.cross_entropy(logits, target, reduction="none")
    if kind == "dlr":
        zs, _ = logits.sort(dim=1, descending=True)
        rows = torch.arange(len(y))
        if target is None:
            z_y = logits[rows, y]
            other = logits.clone()
            other[rows, y] = -float("inf")
            return -(z_y - other.max(dim=1).values) / (zs[:, 0] - zs[:, 2] + _TINY)
        return -(logits[rows, y] - logits[rows, target]) / (
            zs[:, 0] - 0.5 * (zs[:, 2] + zs[:, 3]) + _TINY)
    raise ValueError(f"loss {kind!r}: choose ce or dlr")


def _loss_and_grad(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None,
                   kind: str = "ce") -> tuple[Tensor, Tensor, Tensor]:
    """(per-example loss [N], grad_x of its sum [N, ...], logits [N, C]), all detached.
    Only the input's gradient is computed (torch.autograd.grad), never a parameter's."""
    with torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        logits = model(xr)
        loss = _per_example_loss(logits, y, target, kind)
        (g,) = torch.autograd.grad(loss.sum(), xr)
    return loss.detach(), g.detach(), logits.detach()


def _success(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y


def _hook_owners(model: nn.Module) -> list:
    """Objects that own forward hooks on ``model``'s modules and can switch them off
    (Opacus's GradSampleModule: ``hooks_enabled``, ``disable_hooks``)."""
    owners = []
    for m in model.modules():
        for h in list(m._forward_hooks.values()):
            fn = getattr(h, "func", h)  # functools.partial or a bound method
            owner = getattr(fn, "__self__", None)
            if owner is not None and hasattr(owner, "hooks_enabled") and hasattr(owner, "disable_hooks"):
                if all(owner is not o for o in owners):
                    owners.append(owner)
    return owners


@contextlib.contextmanager
def attack_mode(model: nn.Module):
    """Eval mode and Opacus's per-sample-gradient hooks off while an attack runs; both
    restored afterwards. Under a GradSampleModule the attack's forward/backward would
    otherwise store activations and add its gradients to ``p.grad_sample`` (or fail with
    "No activations detected"), polluting the DP-SGD step."""
    was_training = model.training
    owners = _hook_owners(model)
    states = [o.hooks_enabled for o in owners]
    for o in owners:
        o.disable_hooks()
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
        for o, s in zip(owners, states):
            o.hooks_enabled = s


def _prepare(x: Tensor, y: Tensor, domain: InputDomain, targeted_label: int | None):
    x0 = torch.as_tensor(x).detach().float()
    yt = torch.as_tensor(y).detach().long().reshape(-1)
    if yt.shape[0] != x0.shape[0]:
        raise ValueError(f"x has {x0.shape[0]} records, y has {yt.shape[0]}")
    lo, hi = domain.box(x0)
    mask = domain.mask(x0)
    target = None if targeted_label is None else torch.full_like(yt, int(targeted_label))
    return x0, yt, lo, hi, mask, target


def _random_start(x0: Tensor, eps: float, norm: str, mask: Tensor | None,
                  generator: torch.Generator) -> Tensor:
    """Uniform in the L-inf ball, or uniform in the L2 ball (Gaussian direction, radius
    eps * U^(1/d) with d the number of mutable entries), before the box."""
    if norm == "linf":
        d = (2.0 * torch.rand(x0.shape, generator=generator) - 1.0) * eps
        return d * mask if mask is not None else d
    g = torch.randn(x0.shape, generator=generator)
    if mask is not None:
        g = g * mask
    dim = (mask.flatten(1).sum(1) if mask is not None
           else torch.full((x0.shape[0],), float(x0[0].numel())))
    r = torch.rand(x0.shape[0], generator=generator) ** (1.0 / dim.clamp(min=1.0))
    return g / (_bcast(_norms(g), x0) + _TINY) * _bcast(r * eps, x0)


# --------------------------------------------------------------------------- reference attacks


@torch.no_grad()
def fgsm(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, domain: InputDomain,
    norm: Norm = "linf", targeted_label: int | None = None,
) -> Tensor:
    """FGSM (Goodfellow et al. 2015): P(x + eps * sign(grad_x CE(f(x), y))) for L-inf; for a
    target t the step descends CE(f(x), t). L2: the fast gradient method, eps * g / ||g||."""
    _check_norm(norm)
    _check_eps(eps)
    x0, yt, lo, hi, mask, target = _prepare(x, y, domain, targeted_label)
    with attack_mode(model):
        _, g, _ = _loss_and_grad(model, x0, yt, target)
    return project(x0 + eps * _direction(g, norm, mask), x0, eps, norm, lo, hi, mask)


@torch.no_grad()
def pgd(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, domain: InputDomain,
    norm: Norm = "linf", steps: int = 10, step_size: float | None = None,
    random_start: bool = True, targeted_label: int | None = None,
    generator: torch.Generator | None = None, x_init: Tensor | None = None,
) -> Tensor:
    """Projected gradient descent (Madry et al. 2018) on the loss of module docstring.

    Start: ``x_init`` if given (projected), else x plus a uniform draw from the ball when
    ``random_start`` (from ``generator``, required then), else x. Each step:
    x <- P(x + alpha * dir(grad)), alpha = ``step_size`` or 2.5 * eps / steps.
    Returns the last iterate, float32 [N, *input_shape]."""
    _check_norm(norm)
    _check_eps(eps)
    if int(steps) < 1:
        raise ValueError(f"evasion.steps = {steps!r}: must be an int >= 1")
    x0, yt, lo, hi, mask, target = _prepare(x, y, domain, targeted_label)
    alpha = default_step_size(eps, steps) if step_size is None else float(step_size)
    if x_init is not None:
        xa = project(torch.as_tensor(x_init).float(), x0, eps, norm, lo, hi, mask)
    elif random_start:
        if generator is None:
            raise ValueError("pgd with random_start needs a torch.Generator")
        xa = project(x0 + _random_start(x0, eps, norm, mask, generator), x0, eps, norm, lo, hi, mask)
    else:
        xa = x0.clone()
    with attack_mode(model):
        for _ in range(int(steps)):
            _, g, _ = _loss_and_grad(model, xa, yt, target)
            xa = project(xa + alpha * _direction(g, norm, mask), x0, eps, norm, lo, hi, mask)
    return xa


@torch.no_grad()
def apgd(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, domain: InputDomain,
    norm: Norm = "linf", steps: int = 100, loss: Literal["ce", "dlr"] = "ce",
    targeted_label: int | None = None, restarts: int = 1, rho: float = 0.75,
    generator: torch.Generator | None = None, x_init: Tensor | None = None,
) -> Tensor:
    """Auto-PGD (Croce and Hein 2020, Algorithm 1; see the module docstring).

    Start of each restart: ``x_init`` (projected) if given, else the public code's start
    x + eps * t / ||t||_inf, t ~ U[-1, 1] (L-inf) or x + eps * t / ||t||_2, t ~ N(0, I)
    (L2), drawn from ``generator``. Restarts attack only records not yet fooled. Returns
    float32 [N, *input_shape]: the first successful iterate, else the highest-loss one."""
    _check_norm(norm)
    _check_eps(eps)
    if int(steps) < 1:
        raise ValueError(f"evasion.steps = {steps!r}: must be an int >= 1")
    x0_all, y_all, lo_all, hi_all, mask_all, target_all = _prepare(x, y, domain, targeted_label)
    n = x0_all.shape[0]
    out = x0_all.clone()
    done = torch.zeros(n, dtype=torch.bool)
    best_loss_all = torch.full((n,), -float("inf"))
    with attack_mode(model):
        for r in range(max(int(restarts), 1)):
            idx = torch.nonzero(~done).reshape(-1)
            if idx.numel() == 0:
                break
            x0, yt, lo, hi = x0_all[idx], y_all[idx], lo_all[idx], hi_all[idx]
            mask = mask_all[idx] if mask_all is not None else None
            target = target_all[idx] if target_all is not None else None
            if x_init is not None and r == 0:
                start = torch.as_tensor(x_init).float()[idx]
            else:
                if generator is None:
                    raise ValueError("apgd needs a torch.Generator for its starting point")
                if norm == "linf":
                    t = 2.0 * torch.rand(x0.shape, generator=generator) - 1.0
                    t = t * mask if mask is not None else t
                    start = x0 + eps * t / (_bcast(t.flatten(1).abs().amax(1), x0) + _TINY)
                else:
                    t = torch.randn(x0.shape, generator=generator)
                    t = t * mask if mask is not None else t
                    start = x0 + eps * t / (_bcast(_norms(t), x0) + _TINY)
            adv, ok, lbest = _apgd_run(model, x0, yt, target, start, eps, norm, int(steps), loss,
                                       rho, lo, hi, mask)
            take = ok | (lbest > best_loss_all[idx])
            out[idx[take]] = adv[take]
            best_loss_all[idx[take]] = lbest[take]
            done[idx[ok]] = True
    return out


def _apgd_run(model, x0, y, target, start, eps, norm, steps, kind, rho, lo, hi, mask):
    """One APGD run. Returns (x_out, success [N], best loss [N])."""
    n_ck = max(int(0.22 * steps), 1)  # p_1 = 0.22
    n_min = max(int(0.06 * steps), 1)
    decr = max(int(0.03 * steps), 1)
    xa = project(start, x0, eps, norm, lo, hi, mask)
    loss, g, logits = _loss_and_grad(model, xa, y, target, kind)
    ok = _success(logits, y, target)
    x_succ = xa.clone()
    loss_best, x_best, g_best = loss.clone(), xa.clone(), g.clone()
    step = torch.full((x0.shape[0],), 2.0 * eps)
    x_old = xa.clone()
    prev_loss = loss.clone()
    increases = torch.zeros(x0.shape[0])
    since, k = 0, n_ck
    reduced_last = torch.ones(x0.shape[0], dtype=torch.bool)
    loss_best_last = loss_best.clone()
    for i in range(steps):
        a = 0.75 if i > 0 else 1.0
        momentum = xa - x_old
        x_old = xa
        z = project(xa + _bcast(step, x0) * _direction(g, norm, mask), x0, eps, norm, lo, hi, mask)
        xa = project(xa + a * (z - xa) + (1.0 - a) * momentum, x0, eps, norm, lo, hi, mask)
        loss, g, logits = _loss_and_grad(model, xa, y, target, kind)
        now = _success(logits, y, target)
        new = now & ~ok
        x_succ[new] = xa[new]
        ok = ok | now
        increases += (loss > prev_loss).float()
        prev_loss = loss
        better = loss > loss_best
        x_best[better], g_best[better], loss_best[better] = xa[better], g[better], loss[better]
        since += 1
        if since == k:
            cond1 = increases < rho * k
            cond2 = ~reduced_last & (loss_best_last >= loss_best)
            reduce = cond1 | cond2
            reduced_last = reduce
            loss_best_last = loss_best.clone()
            if reduce.any():
                step[reduce] /= 2.0
                xa = xa.clone()
                xa[reduce], g[reduce] = x_best[reduce], g_best[reduce]
            increases.zero_()
            since, k = 0, max(k - decr, n_min)
    return torch.where(_bcast(ok, x0), x_succ, x_best), ok, loss_best


# --------------------------------------------------------------------------- torchattacks


class _UnitInput(nn.Module):
    """u in [0, 1]^(N, *unit_shape) -> model(lo + scale * u) on [N, *input_shape]."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], lo: float, scale: float):
        super().__init__()
        self.model, self.input_shape, self.lo, self.scale = model, input_shape, lo, scale

    def forward(self, u: Tensor) -> Tensor:
        return self.model((self.lo + self.scale * u).reshape(u.shape[0], *self.input_shape))


def _unit_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(input_shape) == 3:
        return input_shape
    if len(input_shape) == 2:  # ECG [leads, T] -> [leads, 1, T]
        return (input_shape[0], 1, input_shape[1])
    return (1, 1, int(torch.tensor(input_shape).prod()))


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _torchattacks(name: str, model: nn.Module, x0: Tensor, y: Tensor, *, eps: float, norm: str,
                  steps: int, domain: InputDomain, targeted_label: int | None,
                  generator: torch.Generator, num_classes: int, restarts: int,
                  step_size: float | None) -> Tensor:
    import torchattacks as ta

    rng = domain.scalar_range
    assert rng is not None
    lo, hi = rng
    if lo == -float("inf") or hi == float("inf"):
        lo = min(lo, float(x0.min()) - eps) if lo != -float("inf") else float(x0.min()) - eps
        hi = max(hi, float(x0.max()) + eps) if hi != float("inf") else float(x0.max()) + eps
    lo, hi = min(lo, float(x0.min())), max(hi, float(x0.max()))
    scale = max(hi - lo, _TINY)
    shape = tuple(x0.shape[1:])
    wrapped = _UnitInput(model, shape, lo, scale)
    u = ((x0 - lo) / scale).clamp(0.0, 1.0).reshape(x0.shape[0], *_unit_shape(shape))
    eu = eps / scale
    alpha = (default_step_size(eps, steps) if step_size is None else step_size) / scale
    seed = _seed_from(generator)
    tnorm = {"linf": "Linf", "l2": "L2"}[norm]
    if name == "fgsm":
        atk = ta.FGSM(wrapped, eps=eu)
    elif name == "pgd":
        cls = ta.PGD if norm == "linf" else ta.PGDL2
        atk = cls(wrapped, eps=eu, alpha=alpha, steps=steps, random_start=True)
    elif name in ("apgd", "apgd-dlr"):
        atk = ta.APGD(wrapped, norm=tnorm, eps=eu, steps=steps, n_restarts=restarts, seed=seed,
                      loss="ce" if name == "apgd" else "dlr")
    elif name == "autoattack":
        atk = ta.AutoAttack(wrapped, norm=tnorm, eps=eu, version="standard",
                            n_classes=num_classes, seed=seed)
    else:  # pragma: no cover - guarded by check_attacks
        raise ValueError(name)
    if targeted_label is not None:
        t = int(targeted_label)
        atk.set_mode_targeted_by_function(lambda inputs, labels: torch.full_like(labels, t), quiet=True)
    with torch.random.fork_rng(devices=[]), attack_mode(model):
        torch.manual_seed(seed)
        ua = atk(u, y)
    xa = (lo + scale * ua.detach()).reshape(x0.shape).float()
    blo, bhi = domain.box(x0)  # exact per-element box (float rounding of the affine map)
    return torch.maximum(torch.minimum(xa, bhi), blo)


# --------------------------------------------------------------------------- registry


EVASION_ATTACKS: Registry = Registry("evasion attack")
#: name -> reference implementation (None: torchattacks only); meta: fewest classes
#: untargeted / targeted (None: no targeted mode), the norms torchattacks runs untargeted /
#: targeted.
for _name, _fn, _meta in (
    ("fgsm", fgsm, dict(min_classes=2, min_classes_targeted=2, ta=("linf",), ta_targeted=("linf",))),
    ("pgd", pgd, dict(min_classes=2, min_classes_targeted=2, ta=NORMS, ta_targeted=NORMS)),
    ("apgd", functools.partial(apgd, loss="ce"),
     dict(min_classes=2, min_classes_targeted=2, ta=NORMS, ta_targeted=())),
    ("apgd-dlr", functools.partial(apgd, loss="dlr"),
     dict(min_classes=3, min_classes_targeted=4, ta=NORMS, ta_targeted=())),
    ("autoattack", None, dict(min_classes=4, min_classes_targeted=None, ta=NORMS, ta_targeted=(),
                              modalities=("image",))),
):
    EVASION_ATTACKS.register(_name, NoParams, **_meta)(_fn)

ATTACK_NAMES = tuple(EVASION_ATTACKS.names())


@functools.lru_cache(maxsize=1)
def have_torchattacks() -> bool:
    """Is torchattacks importable? (It is in requirements.lock; without it the reference
    implementations run and torchattacks-only attacks are refused in one line.)"""
    import importlib.util

    return importlib.util.find_spec("torchattacks") is not None


def check_attacks(attacks: Sequence[str], *, num_classes: int, domain: InputDomain | None = None,
                  targeted: bool = False) -> None:
    """Raise a one-line ValueError if an attack in ``evasion.attacks`` cannot run on this
    task (unknown name, too few classes, targeted AutoAttack, AutoAttack beyond images:
    its Square attack needs 2-D images, and FAB / Square cannot keep tabular boxes)."""
    for a in attacks:
        if a not in EVASION_ATTACKS:
            raise ValueError(f"evasion.attacks: unknown attack {a!r}; choose from {', '.join(ATTACK_NAMES)}")
        meta = EVASION_ATTACKS.get(a).meta
        if EVASION_ATTACKS.get(a).obj is None and not have_torchattacks():
            raise ValueError(f"evasion.attacks: {a!r} needs torchattacks, which is not installed "
                             "(pip install --no-deps torchattacks==3.5.1)")
        need = meta["min_classes_targeted"] if targeted else meta["min_classes"]
        if need is None:
            raise ValueError(f"evasion.attacks: {a!r} has no targeted mode; use apgd or pgd with evasion.targeted")
        if num_classes < need:
            hint = (" (binary task: use 'apgd', which for 2 classes is APGD on the logit margin)"
                    if num_classes == 2 else "")
            raise ValueError(f"evasion.attacks: {a!r}{' targeted' if targeted else ''} needs >= {need} "
                             f"classes, the task has {num_classes}{hint}")
        mods = meta.get("modalities")
        if mods is not None and domain is not None and domain.modality not in mods:
            raise ValueError(f"evasion.attacks: {a!r} runs on {', '.join(mods)} only, not "
                             f"{domain.modality}; use apgd (and apgd-dlr)")


def run_attack(
    name: str, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, domain: InputDomain,
    norm: Norm = "linf", steps: int = 10, targeted_label: int | None = None,
    generator: torch.Generator, backend: Literal["auto", "torchattacks", "reference"] = "auto",
    restarts: int = 1, step_size: float | None = None, num_classes: int | None = None,
) -> Tensor:
    """x_adv [N, *input_shape] of attack ``name`` (EVASION_ATTACKS: fgsm, pgd, apgd,
    apgd-dlr, autoattack). ``backend = "auto"`` uses torchattacks where it honours the
    domain and the mode (one range, nothing immutable; no target for APGD; L-inf for
    FGSM), else the reference implementation. ``steps`` is PGD's and APGD's iteration
    count; FGSM ignores it. eps = 0 returns x unchanged."""
    _check_norm(norm)
    _check_eps(eps)
    if backend not in ("auto", "torchattacks", "reference"):
        raise ValueError(f"backend = {backend!r}: choose auto, torchattacks or reference")
    x0 = torch.as_tensor(x).detach().float()
    yt = torch.as_tensor(y).detach().long().reshape(-1)
    if num_classes is None:
        with torch.no_grad(), attack_mode(model):
            num_classes = int(model(x0[:1]).shape[1])
    check_attacks([name], num_classes=num_classes, domain=domain, targeted=targeted_label is not None)
    if eps == 0.0 or x0.shape[0] == 0:
        return x0.clone()
    meta = EVASION_ATTACKS.get(name).meta
    ta_ok = have_torchattacks() and domain.scalar_range is not None and norm in (
        meta["ta_targeted"] if targeted_label is not None else meta["ta"])
    if backend == "torchattacks" and not ta_ok:
        raise ValueError(f"backend torchattacks cannot run {name!r} ({norm}, "
                         f"{'targeted' if targeted_label is not None else 'untargeted'}) on {domain.modality}")
    if backend == "torchattacks" or (backend == "auto" and ta_ok):
        return _torchattacks(name, model, x0, yt, eps=eps, norm=norm, steps=steps, domain=domain,
                             targeted_label=targeted_label, generator=generator,
                             num_classes=num_classes, restarts=restarts, step_size=step_size)
    fn = EVASION_ATTACKS.get(name).obj
    if fn is None:
        raise ValueError(f"evasion.attacks: {name!r} runs only through torchattacks"
                         + ("" if have_torchattacks() else ", which is not installed (pip install --no-deps "
                            "torchattacks==3.5.1; its torchvision requirement is not needed)"))
    kw = dict(eps=eps, norm=norm, domain=domain, targeted_label=targeted_label)
    if name == "fgsm":
        return fn(model, x0, yt, **kw)
    if name == "pgd":
        return fn(model, x0, yt, steps=steps, step_size=step_size, generator=generator, **kw)
    return fn(model, x0, yt, steps=steps, restarts=restarts, generator=generator, **kw)
