"""One hospital's work in a round, without Flower: poison (if malicious), train, poison.

``flower/client_app.py`` unpacks messages and calls these two functions.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import torch

from .data.pipeline import HospitalData
from .evaluation import EvalCounts, evaluate_records, robustness
from .experiment import Setup
from .streams import Stream
from .training import chain_hooks, load_state_vector, lr_at, state_vector, train_kwargs, train_local


def local_train(
    setup: Setup, hospital: HospitalData, global_vec: torch.Tensor, server_round: int,
    state: dict[str, Any], malicious: bool | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Train hospital ``hospital`` from the global model ``global_vec`` (Tensor[d]).

    Returns (local model Tensor[d], metrics); with ``privacy.prune_ratio`` the update
    ``local - global_vec`` is pruned before it is sent. ``state`` persists across rounds for this
    hospital (the DP accountant's history lives there). ``malicious`` overrides the
    config's choice of attackers (a deployment node's role).
    """
    cfg, pid = setup.cfg, hospital.id
    malicious_here = setup.is_malicious(pid) if malicious is None else (malicious and setup.attack is not None)
    attacking = setup.attack_active(pid, server_round, role=malicious)
    attack = setup.attack if attacking else None
    ctx = setup.attack_context(pid, server_round)
    if malicious_here:
        setup.attack.observe(global_vec, state, ctx)  # e.g. Neurotoxin's benign direction
    x, y = hospital.x_train, hospital.y_train
    hooks = None
    if attack is not None:
        x, y = attack.poison_data(x, y, setup.rng(Stream.DATA_POISONING, server_round, pid), ctx)
        hooks = attack.train_hooks(global_vec, state, ctx)
    hooks = chain_hooks(hooks, setup.training_hooks(server_round, pid))
    model = setup.new_model()
    load_state_vector(model, global_vec)
    t = cfg.train
    gen = setup.generator(Stream.LOCAL_TRAINING, server_round, pid)
    metrics: dict[str, float] = {}
    if cfg.privacy.mode == "dp_sgd":
        metrics.update(_train_dp_sgd(setup, model, x, y, gen, state, hooks, server_round))
    else:
        res = train_local(model, x, y, **train_kwargs(t, setup.data.modality, server_round, cfg.experiment.rounds),
                          generator=gen, hooks=hooks)
        metrics["train-loss"] = res.loss
    local = state_vector(model)
    if attack is not None:
        update = attack.poison_update(local - global_vec, gen, ctx)
        if attack.needs_honest_updates and setup.collude_locally:
            # a red-team node knows only its own benign update (partial knowledge, m = 1)
            update = attack.collude(update[None], update[None], gen, ctx)[0]
        local = global_vec + update
    if cfg.privacy.prune_ratio > 0:
        # gradient pruning (Zhu et al. 2019) on what leaves the hospital, the attack's included
        from .privacy.pruning import prune_update

        local = global_vec + prune_update(local - global_vec, cfg.privacy.prune_ratio)
    metrics.update({"num-examples": float(len(y)), "partition-id": float(pid),
                    "malicious": float(attacking)})
    return local, metrics


def dp_noise_multiplier(setup: Setup, n_records: int) -> float:
    """sigma for DP-SGD: given, or solved so that ``privacy.target_epsilon`` is reached
    after all rounds (every round trained; conservative if some rounds are skipped)."""
    from .privacy import steps_per_epoch

    p, t = setup.cfg.privacy, setup.cfg.train
    if p.target_epsilon is None:
        return float(p.noise_multiplier)
    q = min(t.batch_size, n_records) / n_records
    total = setup.cfg.experiment.rounds * t.local_epochs * steps_per_epoch(n_records, t.batch_size)
    return _noise_for(p.target_epsilon, p.target_delta, q, total)


@functools.lru_cache(maxsize=256)
def _noise_for(target_epsilon: float, delta: float, q: float, total_steps: int) -> float:
    """Cached: the search calls the accountant dozens of times (seconds per call)."""
    from .privacy import noise_for_target_epsilon

    return noise_for_target_epsilon(target_epsilon, delta, q, total_steps)


def _train_dp_sgd(setup: Setup, model, x, y, gen: torch.Generator, state: Any, hooks=None,
                  server_round: int = 1) -> dict[str, float]:
    """Record-level DP-SGD (Abadi et al. 2016) through Opacus. The accountant's history
    (sigma, q, steps per round) lives in ``state`` so epsilon is cumulative over the run."""
    from .privacy import train_dp_sgd

    p, t = setup.cfg.privacy, setup.cfg.train
    history = [tuple(h) for h in zip(state.get("dp-sigma", []), state.get("dp-q", []), state.get("dp-steps", []))]
    lr = lr_at(server_round, setup.cfg.experiment.rounds, t)
    res = train_dp_sgd(model, x, y, epochs=t.local_epochs, batch_size=t.batch_size, lr=lr,
                       momentum=t.momentum, noise_multiplier=dp_noise_multiplier(setup, len(y)),
                       max_grad_norm=p.max_grad_norm, history=history, generator=gen,
                       delta=p.target_delta, hooks=hooks)
    state["dp-sigma"] = [float(h[0]) for h in res.history]
    state["dp-q"] = [float(h[1]) for h in res.history]
    state["dp-steps"] = [int(h[2]) for h in res.history]
    return {"train-loss": res.loss, "epsilon": res.epsilon}


def local_evaluate(setup: Setup, hospital: HospitalData, global_vec: torch.Tensor,
                   server_round: int | None = None) -> tuple[dict[str, float], EvalCounts]:
    """The global model on the hospital's own test split: (loss, accuracy, num-examples,
    partition-id) and the counts the server merges (clean, triggered copies when the attack
    is targeted, and the evasion rows on the rounds ``[evasion]`` runs)."""
    model = setup.new_model()
    load_state_vector(model, global_vec)
    ev = evaluate_records(setup, model, hospital.x_test, hospital.y_test)
    if server_round is not None and setup.evasion_round(server_round):
        rows = robustness(setup, model, hospital.x_test, hospital.y_test, server_round, hospital.id,
                          x_calibration=hospital.x_train[:200])
        ev = dataclasses.replace(ev, robustness=rows)
    if server_round is not None and setup.cfg.experiment.mia and server_round == setup.cfg.experiment.rounds:
        from .privacy.mia import hospital_audit

        audit = hospital_audit(model, (hospital.x_train, hospital.y_train), (hospital.x_test, hospital.y_test))
        ev = dataclasses.replace(ev, mia=audit)
    n = ev.clean.count
    acc = float(np.trace(ev.clean.confusion)) / n if n else float("nan")
    loss = ev.clean.loss_sum / n if n and ev.clean.nonfinite == 0 else float("nan")
    metrics = {"loss": loss, "accuracy": acc, "num-examples": float(len(hospital.y_test)),
               "partition-id": float(hospital.id)}
    return metrics, ev
