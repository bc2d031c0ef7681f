"""The server's logic, without Flower: sampling, validation, collusion, aggregation,
the evaluation schedule and recording. ``rounds.run_rounds`` drives it through a transport.

One round, for replies of n clients with flattened local models ``v_i`` (Tensor[d]):
  1. validate each reply (sampled this round, first reply of its hospital, shape, dtype,
     finite values, norm of ``v_i - g`` <= max_update_norm); an invalid reply is dropped and
     recorded, never a crash;
  2. updates ``x_i = v_i - g`` stacked into ``Tensor[n, d]``;
  3. colluding attackers' rows replaced by the attack's ``collude(honest, malicious)``
     (the omniscient adversary of ALIE/IPM/min-max in simulation);
  4. the rule (after ``defense.pre``) gives the aggregate update ``u``; central DP clips
     each row to S first and adds N(0, (z S / n)^2 I) after (``privacy.central.dp_fedavg``);
  5. ``g <- g + u``; the round is recorded with the server's evaluation and the hospitals'.

With ``privacy.secure_aggregation`` steps 4-5 see only the sum of the validated rows
(``_apply_secure``; no per-client norm is recorded). With ``[reconstruction]`` the curious
server audits the target hospital's update of the configured round before step 2.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .aggregators import AGGREGATORS, PRE_AGGREGATORS, AggregationContext
from .aggregators.base import AggregationResult, PreconditionError, precondition_problem
from .aggregators.pipeline import aggregate as run_rule
from .config import ConfigError
from .detectors import DETECTORS, DetectionContext, DetectionCounts, aggregate_with_detection
from .evaluation import EvalCounts, merged, robustness, round_metrics, server_evaluation
from .experiment import Setup
from .rounds import ClientEval, ClientReply, RunFailed
from .streams import Stream
from .training import load_state_vector, state_vector

__all__ = ["POOLED", "ClientEval", "ClientReply", "Coordinator", "check_requirement", "check_secure_aggregation"]

#: Partition id of the single pooled "client" of the centralized baseline.
POOLED = -1
#: a run with this many rounds in a row that aggregated nothing stops (RunFailed)
STALL_ROUNDS = 3


def check_requirement(setup: Setup, n: int) -> None:
    """Refuse at setup a rule whose precondition fails for n clients per round (after the
    ``defense.pre`` steps) and f assumed; in a round with fewer valid replies the round loop
    records the failed precondition instead (``Coordinator.aggregate``)."""
    d = setup.cfg.defense
    msg = precondition_problem(d.name, n, d.f, d.pre, params=setup.cfg.params("defense"))
    if msg:
        raise ConfigError(f"defense.name = {d.name!r}: {msg}", key="defense.name")


def check_secure_aggregation(setup: Setup) -> None:
    """With ``privacy.secure_aggregation`` no one sees the round's individual honest
    updates: refuse a colluding attack with full knowledge (its omniscient adversary crafts
    from them); partial knowledge (the attackers' own updates) stays possible. The other
    refusals (rules, detectors, ``defense.pre``) are in ``config.validate_components``."""
    cfg, a = setup.cfg, setup.attack
    if cfg.privacy.secure_aggregation and a is not None and a.needs_honest_updates \
            and cfg.attack.knowledge == "full":
        raise ConfigError(
            f"privacy.secure_aggregation = true: attack.name = {cfg.attack.name!r} with attack.knowledge = "
            "'full' crafts from the round's individual honest updates, which secure aggregation hides; "
            "use attack.knowledge = 'partial' (the attackers' own updates)", key="attack.knowledge")
    r = cfg.reconstruction
    if r.enabled and r.target_hospital >= setup.n:
        raise ConfigError(f"reconstruction.target_hospital = {r.target_hospital}: ids are 0..{setup.n - 1} "
                          f"({setup.n} hospitals)", key="reconstruction.target_hospital")


class Coordinator:
    """Holds the global model (one flat Tensor[d], ``global_vec``) and the defense; turns
    each round's replies into the next global model and records the round."""

    def __init__(self, setup: Setup, on_round: Callable[[dict], None] | None = None) -> None:
        self.setup = setup
        self.cfg = setup.cfg
        self.global_vec = state_vector(setup.new_model())
        self._model: nn.Module | None = None
        self._model_vec: torch.Tensor | None = None
        entry = AGGREGATORS.get(self.cfg.defense.name)
        self.capabilities = entry.meta
        self.rule = entry.obj(self.cfg.params("defense"))
        self.pre = [PRE_AGGREGATORS.get(name).obj(PRE_AGGREGATORS.get(name).params())
                    for name in self.cfg.defense.pre]
        self.rule_state: dict[str, Any] = {}
        det = DETECTORS.get(self.cfg.detection.name)
        self.detector = None if det.name == "none" else det.obj(self.cfg.params("detection"))
        self.detector_state: dict[str, Any] = {}
        self.detection_counts = DetectionCounts()
        self._round_detection: DetectionCounts | None = None
        self.previous: torch.Tensor | None = None
        self.on_round = on_round
        self.rounds: list[dict] = []
        self.clients: list[dict] = []
        #: partition id -> the hospital's cumulative DP-SGD epsilon by the server's own
        #: accountant (``_account``); what a hospital reports is only recorded beside it
        self.epsilons: dict[int, float] = {}
        #: partition id -> the (sigma, q, steps) of every round whose update reached the server
        self.dp_history: dict[int, list[tuple[float, float, int]]] = {}
        self.last_eval: dict[int, ClientEval] = {}
        self.last_server: EvalCounts | None = None  # the server's latest evaluation
        self.last_federated: EvalCounts | None = None  # the latest merged hospital counts
        #: round -> the attack's trigger success on the clean twin (``twin.clean_twin``)
        self.twin_asr: dict[int, float | None] = {}
        #: partition id -> the hospital's membership-inference audit of the final model
        self.mia_audits: dict[int, dict] = {}
        #: the latest evasion evaluation (``_evasion``), None before one ran
        self.evasion: dict[str, Any] | None = None
        #: the curious server's reconstruction audit (``[reconstruction]``), None before it ran;
        #: its records for the figure, and the run directory the figure goes to (if known)
        self.reconstruction: dict[str, Any] | None = None
        self.reconstruction_records: Any = None
        self.run_dir: Path | None = None
        self.bytes_down = 0
        self.bytes_up = 0
        self._pending: dict[int, dict] = {}
        self._sampled: set[int] = set()
        self._round_problem = ""  # why this round aggregated nothing (a failed precondition)
        self._t0 = time.perf_counter()
        self.resume_offset = 0.0  # elapsed seconds of the rounds before a resume
        self.twin: dict | None = None  # the clean twin's results (``twin.clean_twin``)
        if setup.cfg.experiment.init_model:
            from .checkpoint import load_model_vector

            self.global_vec = load_model_vector(setup.cfg.experiment.init_model, setup.new_model())
        if not self.centralized:
            check_requirement(setup, self.clients_per_round)
            check_secure_aggregation(setup)

    # ------------------------------------------------------------------ state
    @property
    def centralized(self) -> bool:
        return self.cfg.experiment.mode == "centralized"

    @property
    def next_round(self) -> int:
        """The first round still to run (1 for a new run)."""
        return len(self.rounds) + 1

    def global_model(self) -> nn.Module:
        """The global model as a module (rebuilt from ``global_vec`` when it changed)."""
        if self._model is None:
            self._model = self.setup.new_model()
        if self._model_vec is None or not torch.equal(self._model_vec, self.global_vec):
            load_state_vector(self._model, self.global_vec)
            self._model_vec = self.global_vec
        return self._model

    @property
    def _param_bytes(self) -> int:
        return 4 * int(self.global_vec.numel())  # float32 arrays on the wire

    # ------------------------------------------------------------------ schedule
    @property
    def clients_per_round(self) -> int:
        return max(1, int(round(self.setup.n * self.cfg.experiment.fraction_train)))

    def sample(self, server_round: int, available: list[int]) -> list[int]:
        """Partition ids to train this round, drawn from the ``CLIENT_SAMPLING`` stream of
        the round (never keyed by Flower's random node ids). The centralized baseline has
        one pooled client."""
        if self.centralized:
            ids = [POOLED]
        else:
            available = sorted(available)
            k = min(self.clients_per_round, len(available))
            if k == len(available):
                ids = available
            else:
                rng = self.setup.rng(Stream.CLIENT_SAMPLING, server_round)
                ids = sorted(rng.choice(available, size=k, replace=False).tolist())
        self._sampled = set(ids)
        self.bytes_down += len(ids) * self._param_bytes
        return ids

    def evaluates(self, server_round: int) -> bool:
        """Do the hospitals evaluate the global model after this round?"""
        e = self.cfg.experiment
        return server_round % e.eval_every == 0 or server_round == e.rounds

    # ------------------------------------------------------------------ aggregation
    def _validate(self, reply: ClientReply, seen: set[int]) -> str | None:
        if reply.problem is not None:
            return _one_line(reply.problem)
        if reply.partition_id not in self._sampled:
            return "not sampled this round"
        if reply.partition_id in seen:
            return "duplicate reply"
        v = reply.vector
        if v is not None and not isinstance(v, torch.Tensor):
            return f"not a tensor ({type(v).__name__})"
        if v is not None:
            v = v.detach()
        if v is None or v.shape != self.global_vec.shape:
            return f"wrong shape {None if v is None else tuple(v.shape)}"
        if v.dtype != self.global_vec.dtype:
            return f"wrong dtype {v.dtype}"
        if not torch.isfinite(v).all():
            return "non-finite values"
        norm = float(torch.linalg.vector_norm((v - self.global_vec).double()))
        if not norm <= self.cfg.defense.max_update_norm:
            return f"update norm {norm:.3g} above defense.max_update_norm"
        return None

    def _row(self, server_round: int, reply: ClientReply, problem: str | None) -> dict:
        setup, pid = self.setup, reply.partition_id
        m = reply.metrics if isinstance(reply.metrics, dict) else {}
        return {
            "round": server_round, "partition_id": pid,
            "hospital": ("pooled" if pid == POOLED else
                         setup.data.hospitals[pid].name if 0 <= pid < setup.n else str(pid)),
            "malicious": int(setup.is_malicious(pid)),
            "attacking": int(setup.attack_active(pid, server_round)),
            "reported_attacking": int(_number(m.get("malicious"), 0.0) > 0),
            "status": "dropped" if problem else "ok", "problem": problem or "",
            "accepted": 0, "weight": 0.0, "update_norm": float("nan"),
            "num_examples": _count(reply.num_examples),
            "train_loss": _number(m.get("train-loss")),
            "epsilon": float("nan"),  # the server's own accountant (``_account``)
            "reported_epsilon": _number(m.get("epsilon")),
        }

    def aggregate(self, server_round: int, replies: list[ClientReply]) -> None:
        """Steps 1-5 of the module docstring for one round."""
        cfg = self.cfg
        rows: dict[int, dict] = {}
        valid: list[ClientReply] = []
        seen: set[int] = set()
        # a partition id that is not an int (in-process transports only) is nobody's reply
        replies = [r for r in replies if isinstance(r.partition_id, (int, np.integer))
                   and not isinstance(r.partition_id, bool)]
        for r in sorted(replies, key=lambda r: int(r.partition_id)):
            problem = self._validate(r, seen)
            if r.vector is not None:
                self.bytes_up += self._param_bytes
            if r.partition_id in rows:  # a duplicate keeps the first reply's record
                continue
            row = self._row(server_round, r, problem)
            rows[r.partition_id] = row
            if r.partition_id in self._sampled and r.vector is not None:
                row["epsilon"] = self._account(r.partition_id, row["num_examples"])
            if problem is None:
                seen.add(r.partition_id)
                valid.append(dataclasses.replace(r, vector=r.vector.detach()))
        self._pending = rows
        if not valid or len(valid) < cfg.experiment.min_hospitals:
            return  # no aggregation this round: the global model stays
        ids = tuple(r.partition_id for r in valid)
        if cfg.reconstruction.enabled and self.reconstruction is None:
            self._reconstruct(server_round, ids)
        updates = torch.stack([r.vector for r in valid]) - self.global_vec
        updates = self._collude(server_round, ids, updates)
        d = cfg.defense
        problem = precondition_problem(d.name, len(ids), d.f, d.pre, params=cfg.params("defense"))
        result = None
        if problem is None:
            try:
                if cfg.privacy.secure_aggregation:
                    # no per-client norm: clients.csv keeps update_norm NaN
                    result = self._apply_secure(server_round, ids, updates, valid)
                else:
                    for i, pid in enumerate(ids):
                        rows[pid]["update_norm"] = float(torch.linalg.vector_norm(updates[i].double()))
                    result = self._apply_rule(server_round, ids, updates, valid, rows)
            except PreconditionError as e:  # e.g. rows a detector removed
                problem = str(e)
        if result is None:
            self._round_problem = f"precondition failed: {problem}"
            return  # no aggregation this round: the global model stays
        self.global_vec = self.global_vec + result.aggregate.to(self.global_vec.dtype)
        for i, pid in enumerate(ids):
            w = float(result.weights[i]) if result.weights is not None else 1.0 / len(ids)
            rows[pid]["weight"] = w
            rows[pid]["accepted"] = int((result.weights is None or w > 0) and not rows[pid].get("flagged"))

    def _account(self, pid: int, reported_records: int) -> float:
        """The server's own DP-SGD accountant for hospital ``pid`` after one more update of
        it reached the server: the round's (sigma, q, steps) from the config and the
        hospital's record count the server knows (its training split in a simulation; the
        reported count only where the server holds no records, a deployment with
        hospital-local files), and the cumulative epsilon (RDP, ``privacy.epsilon_of``).
        What the hospital reports is never used for the run's epsilon. NaN unless DP-SGD."""
        p = self.cfg.privacy
        if p.mode != "dp_sgd":
            return float("nan")
        from .client import dp_noise_multiplier
        from .privacy import epsilon_of, steps_per_epoch

        n = len(self.setup.data.hospitals[pid].y_train) if 0 <= pid < self.setup.n else 0
        n = n or reported_records
        if n <= 0:
            return float("nan")
        t = self.cfg.train
        q = min(t.batch_size, n) / n
        step = (float(dp_noise_multiplier(self.setup, n)), q, t.local_epochs * steps_per_epoch(n, t.batch_size))
        self.dp_history.setdefault(pid, []).append(step)
        eps = float(epsilon_of(self.dp_history[pid], p.target_delta))
        self.epsilons[pid] = eps
        return eps

    def _collude(self, server_round: int, ids: tuple[int, ...], updates: torch.Tensor) -> torch.Tensor:
        attack = self.setup.attack
        if attack is None or not attack.needs_honest_updates:
            return updates
        mal = torch.tensor([self.setup.attack_active(pid, server_round) for pid in ids])
        if not mal.any() or (mal.all() and self.cfg.attack.knowledge == "full"):
            return updates
        first = ids[int(mal.nonzero()[0])]
        ctx = self.setup.attack_context(first, server_round, n_clients=len(ids))
        if self.setup.collude_locally:
            return updates  # the attackers crafted their updates on their own nodes
        # full knowledge: the round's honest updates (the papers' omniscient colluders);
        # partial: only the colluders' own benign updates (Shejwalkar and Houmansadr 2021)
        reference = updates[~mal] if self.cfg.attack.knowledge == "full" else updates[mal]
        crafted = attack.collude(reference, updates[mal],
                                 self.setup.generator(Stream.COLLUSION, server_round), ctx)
        out = updates.clone()
        out[mal] = crafted.to(out.dtype)
        return out

    def _context(self, server_round: int, ids: tuple[int, ...],
                 replies: list[ClientReply]) -> AggregationContext:
        from .reference import root_update

        weights = None
        if self.cfg.defense.weighted:
            # float64: a count near 2**63 (or any absurd report) stays finite; a count that is
            # not a non-negative int weighs 0
            w = torch.tensor([float(_count(r.num_examples)) for r in replies], dtype=torch.float64)
            weights = (w / w.sum()).to(torch.float32) if w.sum() > 0 else None
        reference = (root_update(self.setup, self.global_vec, server_round)
                     if self.capabilities.get("needs_reference") else None)
        return AggregationContext(
            f=self.cfg.defense.f, weights=weights, round=server_round, previous=self.previous,
            reference=reference, client_ids=ids,
            generator=self.setup.generator(Stream.AGGREGATION, server_round),
            state=self.rule_state,
        )

    def _rule_fn(self) -> Callable[[torch.Tensor, AggregationContext], AggregationResult]:
        """The configured aggregation: ``defense.pre`` steps and the rule, inside DP-FedAvg's
        clipping and noise when ``privacy.mode = "central"``."""
        p = self.cfg.privacy
        if p.mode != "central":
            return lambda rows, ctx: run_rule(rows, self.rule, ctx, self.pre)
        from .privacy import dp_fedavg

        def central(rows: torch.Tensor, ctx: AggregationContext) -> AggregationResult:
            weights: list = []

            def rule(clipped: torch.Tensor) -> torch.Tensor:
                res = run_rule(clipped, self.rule, ctx, self.pre)
                weights.append(res.weights)
                return res.aggregate

            agg = dp_fedavg(rows, p.clip_norm, p.noise_multiplier, ctx.generator, aggregate=rule)
            return AggregationResult(agg, weights[0])

        return central

    def _apply_rule(self, server_round: int, ids: tuple[int, ...], updates: torch.Tensor,
                    replies: list[ClientReply], rows: dict[int, dict]) -> AggregationResult:
        ctx = self._context(server_round, ids, replies)
        if self.detector is None:
            result = self._rule_fn()(updates, ctx)
        else:
            dctx = DetectionContext(client_ids=ids, round=server_round, global_update=self.previous,
                                    state=self.detector_state,
                                    generator=self.setup.generator(Stream.DETECTION, server_round))
            det, result = aggregate_with_detection(updates, self.detector, dctx, self._rule_fn(), ctx)
            for i, pid in enumerate(ids):
                rows[pid]["flagged"] = int(det.flagged[i])
                rows[pid]["detector_score"] = float(det.scores[i]) if det.scores is not None else float("nan")
            attacking = [bool(rows[pid]["attacking"]) for pid in ids]
            counts = DetectionCounts.of(det.flagged, attacking)
            self.detection_counts = self.detection_counts + counts
            self._round_detection = counts
        self.previous = result.aggregate
        return result

    def _apply_secure(self, server_round: int, ids: tuple[int, ...], updates: torch.Tensor,
                      replies: list[ClientReply]) -> AggregationResult:
        """Secure aggregation (``privacy.secure_aggregation``), simulated: what each hospital
        masks is its update (clipped to ``privacy.clip_norm`` by the hospital itself under
        DP-FedAvg; scaled by its public share w_i when ``defense.weighted``), and the server,
        its rule and everything after see only the sum (``privacy.server_view``, Tensor[1, d]),
        divided into the mean (sum / n, or the weighted sum). The rule gets that one row with no
        per-client context; DP-FedAvg's noise N(0, (z S / n)^2 I) is added to its output, as
        ``privacy.dp_fedavg`` does. Returns the aggregate and the public weights (None: 1/n)."""
        from .privacy.secure_agg import server_view

        p, n = self.cfg.privacy, len(ids)
        if self.detector is not None or self.pre:  # refused by config.validate_components
            raise ConfigError("privacy.secure_aggregation = true: the server cannot run a detector or "
                              "defense.pre on a sum", key="privacy.secure_aggregation")
        sent = updates
        if p.mode == "central":
            from .privacy.central import clip_updates

            sent = clip_updates(sent, p.clip_norm)
        ctx = self._context(server_round, ids, replies)
        w = ctx.weights
        if w is not None:
            mean = server_view(sent * w.to(sent.dtype)[:, None], True)  # sum_i w_i x_i, sum w = 1
        else:
            mean = server_view(sent, True) / n
        res = run_rule(mean, self.rule, dataclasses.replace(ctx, weights=None, client_ids=()))
        agg = res.aggregate.reshape(-1)
        if p.mode == "central":
            noise = torch.randn(agg.shape[0], generator=ctx.generator, dtype=agg.dtype, device=agg.device)
            agg = agg + noise * (p.noise_multiplier * p.clip_norm / n)
        self.previous = agg
        return AggregationResult(agg, w)

    def _reconstruct(self, server_round: int, ids: tuple[int, ...]) -> None:
        """The curious server's reconstruction audit (``[reconstruction]``) on this round's
        broadcast model, once the target sent a valid update at or after the configured round
        (``privacy.reconstruction.run``); the figure goes into ``run_dir`` when it is known."""
        from .privacy.reconstruction.run import curious_server_audit, is_due, save_reconstruction

        if not is_due(self.setup, server_round, ids, self.reconstruction is not None):
            return
        res, rec = curious_server_audit(self.setup, self.global_vec, server_round, ids)
        if rec is not None and self.run_dir is not None:
            res["figure"] = save_reconstruction(self.run_dir, rec).name
        self.reconstruction, self.reconstruction_records = res, rec

    # ------------------------------------------------------------------ recording
    def end_round(self, server_round: int, evals: list[ClientEval], started: float) -> dict:
        """Record the round: the server's metrics (its own test set, or the merged counts of
        the hospitals' evaluations when it holds none), the hospitals' own evaluations, and
        ``round_seconds`` = wall time since ``started`` (the round's start)."""
        self.bytes_down += len(evals) * self._param_bytes
        for e in evals:
            self.last_eval[e.partition_id] = e
        ev = {e.partition_id: e for e in evals}
        for e in evals:
            if e.counts is not None and e.counts.mia is not None:
                self.mia_audits[e.partition_id] = e.counts.mia
        rows = list(self._pending.values())
        for row in rows:
            e = ev.get(row["partition_id"])
            row["local_accuracy"] = e.accuracy if e is not None else float("nan")
        self.clients.extend(rows)
        server_ev = server_evaluation(self.setup, self.global_model())
        fed_ev = merged([e.counts for e in evals if e.counts is not None])
        if fed_ev is not None:
            self.last_federated = fed_ev
        self.last_server = server_ev
        primary = server_ev if server_ev is not None else fed_ev
        metrics = round_metrics(self.setup, primary)
        metrics.update(self._evasion(server_round, evals))
        asr, clean = metrics["attack_success_rate"], self.twin_asr.get(server_round)
        all_acc = [e.accuracy for e in ev.values()]
        honest_acc = [e.accuracy for p, e in ev.items() if not self.setup.is_malicious(p)]
        now = time.perf_counter()
        row = {
            "round": server_round,
            **metrics,
            "attack_success_rate_clean": clean,
            "attack_success_lift": asr - clean if asr is not None and clean is not None else None,
            "evaluated_on": ("server" if server_ev is not None else "hospitals" if fed_ev is not None else ""),
            "round_problem": self._round_problem,
            "mean_hospital_accuracy": float(np.mean(all_acc)) if all_acc else float("nan"),
            "worst_hospital_accuracy": float(np.min(all_acc)) if all_acc else float("nan"),
            "worst_honest_hospital_accuracy": float(np.min(honest_acc)) if honest_acc else float("nan"),
            "replies": len(rows),
            "accepted": sum(r["accepted"] for r in rows),
            "dropped": sum(r["status"] == "dropped" for r in rows),
            "epsilon": max(self.epsilons.values()) if self.epsilons else float("nan"),
            **self._detection_columns(),
            "round_seconds": now - started,
            "elapsed_seconds": now - self._t0 + self.resume_offset,
        }
        row = {k: (float("nan") if v is None else v) for k, v in row.items()}
        self.rounds.append(row)
        self._pending = {}
        self._round_problem = ""
        if self.on_round:
            self.on_round(row)
        self._check_progress(rows)
        return row

    def _evasion(self, server_round: int, evals: list[ClientEval]) -> dict[str, Any]:
        """Robustness of the global model after an evasion round: the server's own test set
        (when it holds one) and the hospitals' rows, summed (federated evaluation). Returns
        the round's ``robust_accuracy@eps`` columns (worst case over the attacks)."""
        if not self.setup.evasion_round(server_round):
            return {}
        from .evasion.report import WORST_CASE, combine_reports

        per: dict[int, list[dict]] = {}
        for e in evals:
            rows = e.counts.robustness if e.counts is not None else None
            if rows:
                try:
                    combine_reports([rows])  # malformed rows from a hospital are left out
                except (KeyError, TypeError, ValueError):
                    continue
                per[e.partition_id] = rows
        d = self.setup.data
        server_rows = None
        if d.x_test is not None and len(d.y_test):
            server_rows = robustness(self.setup, self.global_model(), d.x_test, d.y_test, server_round,
                                     self.setup.n, x_calibration=d.x_test[:200])
        combined = combine_reports(list(per.values())) if per else []
        self.evasion = {"round": server_round, "server": server_rows, "hospitals": per, "combined": combined}
        primary = server_rows if server_rows is not None else combined
        attacks = {r["attack"] for r in primary}
        worst = WORST_CASE if WORST_CASE in attacks else next(iter(attacks), None)
        return {f"robust_accuracy@{r['eps']:g}": r["robust_accuracy"] for r in primary if r["attack"] == worst}

    def _detection_columns(self) -> dict[str, Any]:
        if self.detector is None:
            return {}
        c, self._round_detection = self._round_detection, None
        if c is None:
            return {"detector_flagged": 0, "detector_tpr": None, "detector_fpr": None}
        return {"detector_flagged": c.tp + c.fp, "detector_tpr": c.tpr, "detector_fpr": c.fpr}

    def _check_progress(self, rows: list[dict]) -> None:
        """Stop a run that cannot make progress: ``STALL_ROUNDS`` rounds in a row (or every
        round of a shorter run) in which nothing was aggregated."""
        stalled = 0
        for r in reversed(self.rounds):
            if r["accepted"]:
                break
            stalled += 1
        limit = min(STALL_ROUNDS, self.cfg.experiment.rounds)
        if stalled >= limit:
            problems = [r["round_problem"] for r in self.rounds[-stalled:] if r.get("round_problem")]
            problems = problems or [c["problem"] for c in self.clients[-200:] if c["problem"]]
            why = max(set(problems), key=problems.count) if problems else "no replies"
            n = self.cfg.experiment.min_hospitals
            raise RunFailed(
                f"no update was aggregated in the last {stalled} rounds ({why}; or fewer than "
                f"experiment.min_hospitals = {n} valid replies): stopping")

    def privacy_summary(self) -> dict[str, Any]:
        """epsilon / delta for the run: DP-SGD reports the maximum over hospitals of each
        one's cumulative epsilon; central DP the client-level epsilon of DP-FedAvg, or
        null with the reason when the rule does not have the mean's sensitivity."""
        p = self.cfg.privacy
        if p.mode == "dp_sgd":
            eps = max(self.epsilons.values()) if self.epsilons else None
            return {"epsilon": eps, "delta": p.target_delta, "epsilon_note": None}
        if p.mode == "central":
            from .privacy import central_dp_epsilon_or_reason

            q = self.clients_per_round / self.setup.n
            eps, reason = central_dp_epsilon_or_reason(
                self.cfg.defense.name, p.noise_multiplier, q, self.cfg.experiment.rounds,
                p.target_delta, mean_sensitivity=bool(self.capabilities.get("mean_sensitivity")),
                weighted=self.cfg.defense.weighted, pre_steps=bool(self.cfg.defense.pre))
            return {"epsilon": eps, "delta": p.target_delta, "epsilon_note": reason}
        return {"epsilon": None, "delta": None, "epsilon_note": None}


def _number(value: Any, default: float = float("nan")) -> float:
    """A reported metric as a float; anything that is not one number (a list, a string,
    None, an int beyond float range) becomes ``default`` rather than an exception."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return default
    try:
        return float(value)
    except OverflowError:
        return default


#: the largest record count a reply may claim (beyond it the count is not believed: 0)
MAX_COUNT = 2**53


def _count(value: Any) -> int:
    """A reported ``num_examples`` as an int in [0, MAX_COUNT]; anything else is 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return 0
    v = int(value)
    return v if 0 <= v <= MAX_COUNT else 0


def _one_line(text: Any) -> str:
    """A transport's problem text as one short line (the clients.csv cell)."""
    line = " ".join(str(text).split())[:300]
    return line or "rejected by the transport"
