"""Checkpoints: after every completed round the run directory holds everything the next
round reads, so a killed run continues from its last completed round (``fedmedsec run
CONFIG --resume RUN_DIR``) with the numbers an uninterrupted run would give.

Two files, written atomically (tmp file + rename), so a kill mid-write leaves the previous
checkpoint:
  ``checkpoint.pt``   tensors and their containers (global model, the rule's and the
                      detector's state, the previous aggregate, each hospital's state kept
                      by an in-process transport: DP accountant histories, an attack's last
                      global models), read back with ``torch.load(weights_only=True)``;
  ``checkpoint.json`` the records so far (rounds, clients, evaluations, audits, counters).
Every random draw comes from a named stream keyed by round and hospital (``streams.py``),
so no generator state needs saving. The final model is written as ``final_model.pt`` (a
``state_dict``, ``torch.load(weights_only=True)``) for reuse (``experiment.init_model``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

CHECKPOINT = "checkpoint.pt"
RECORDS = "checkpoint.json"
FINAL_MODEL = "final_model.pt"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save(run_dir: Path, co, transport_states: dict | None) -> None:
    """Write the checkpoint of ``co`` (a Coordinator) after its last recorded round."""
    tensors = {"global_vec": co.global_vec, "previous": co.previous, "rule_state": co.rule_state,
               "detector_state": co.detector_state, "hospital_states": transport_states}

    def ev_dict(e):
        c = e.counts
        return {"partition_id": e.partition_id, "loss": e.loss, "accuracy": e.accuracy,
                "num_examples": e.num_examples,
                "counts": None if c is None else {**c.to_dict(), "robustness": c.robustness, "mia": c.mia}}

    records = {
        "round": len(co.rounds), "rounds": co.rounds, "clients": co.clients,
        "epsilons": {str(k): v for k, v in co.epsilons.items()},
        "dp_history": {str(k): [list(h) for h in v] for k, v in co.dp_history.items()},
        "last_eval": [ev_dict(e) for e in co.last_eval.values()],
        "last_server": None if co.last_server is None else co.last_server.to_dict(),
        "last_federated": None if co.last_federated is None else co.last_federated.to_dict(),
        "twin_asr": {str(k): v for k, v in co.twin_asr.items()},
        "mia_audits": {str(k): v for k, v in co.mia_audits.items()},
        "evasion": None if co.evasion is None else {
            **co.evasion, "hospitals": {str(k): v for k, v in co.evasion["hospitals"].items()}},
        "detection_counts": co.detection_counts.to_dict(),
        "bytes": [co.bytes_down, co.bytes_up], "elapsed": co.rounds[-1]["elapsed_seconds"] if co.rounds else 0.0,
        "twin": co.twin, "config": co.cfg.to_toml(),
    }
    _atomic(run_dir / CHECKPOINT, lambda p: torch.save(tensors, p))
    _atomic(run_dir / RECORDS, lambda p: p.write_text(json.dumps(records)))


def load(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, records) of a run directory's checkpoint; ConfigError when there is none
    or it is unreadable."""
    pt, js = run_dir / CHECKPOINT, run_dir / RECORDS
    if not pt.is_file() or not js.is_file():
        raise ConfigError(f"--resume {str(run_dir)[:200]!r}: no checkpoint there (a run writes one after "
                          "each completed round)")
    try:
        tensors = torch.load(pt, weights_only=True)
        records = json.loads(js.read_text())
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint is a user-facing one-liner
        raise ConfigError(f"--resume {str(run_dir)[:200]!r}: the checkpoint cannot be read "
                          f"({type(e).__name__})") from None
    return tensors, records


def restore(co, tensors: dict[str, Any], records: dict[str, Any]) -> None:
    """Put a checkpoint back into a freshly built Coordinator of the same config."""
    from .detectors import DetectionCounts
    from .evaluation import EvalCounts
    from .metrics import ClassificationCounts
    from .rounds import ClientEval

    def counts_of(d):
        if d is None:
            return None
        return EvalCounts(ClassificationCounts.from_dict(d["clean"]),
                          ClassificationCounts.from_dict(d["trigger"]) if d.get("trigger") else None,
                          d.get("robustness"), d.get("mia"))

    if tensors["global_vec"].shape != co.global_vec.shape:
        raise ConfigError("--resume: the checkpoint's model does not match this config's model")
    co.global_vec = tensors["global_vec"]
    co.previous = tensors["previous"]
    co.rule_state.update(tensors["rule_state"] or {})
    co.detector_state.update(tensors["detector_state"] or {})
    co.rounds = records["rounds"]
    co.clients = records["clients"]
    co.epsilons = {int(k): v for k, v in records["epsilons"].items()}
    co.dp_history = {int(k): [(float(s), float(q), int(t)) for s, q, t in v]
                     for k, v in records.get("dp_history", {}).items()}
    co.last_eval = {e["partition_id"]: ClientEval(e["partition_id"], e["loss"], e["accuracy"],
                                                  e["num_examples"], counts=counts_of(e["counts"]))
                    for e in records["last_eval"]}
    co.last_server = counts_of(records["last_server"])
    co.last_federated = counts_of(records["last_federated"])
    co.twin_asr = {int(k): v for k, v in records["twin_asr"].items()}
    co.mia_audits = {int(k): v for k, v in records["mia_audits"].items()}
    ev = records["evasion"]
    co.evasion = None if ev is None else {**ev, "hospitals": {int(k): v for k, v in ev["hospitals"].items()}}
    dc = records["detection_counts"]
    co.detection_counts = DetectionCounts(dc["tp"], dc["fp"], dc["fn"], dc["tn"])
    co.bytes_down, co.bytes_up = records["bytes"]
    co.resume_offset = float(records["elapsed"])
    co.twin = records.get("twin")


def save_model(run_dir: Path, model: torch.nn.Module) -> Path:
    path = run_dir / FINAL_MODEL
    _atomic(path, lambda p: torch.save(model.state_dict(), p))
    return path


def load_model_vector(path: str | Path, template: torch.nn.Module) -> torch.Tensor:
    """A saved model (``final_model.pt``) as the flat vector of ``template``'s layout."""
    from .training import state_vector

    p = Path(path).expanduser()
    try:
        exists = p.is_file()
    except OSError:  # e.g. a name longer than the file system allows
        exists = False
    if not exists:
        raise ConfigError(f"experiment.init_model = {str(p)[:200]!r}: no such file", key="experiment.init_model")
    try:
        sd = torch.load(p, weights_only=True)
        template.load_state_dict(sd)
    except Exception as e:  # noqa: BLE001 - a wrong or damaged file is a one-line error
        raise ConfigError(f"experiment.init_model = {str(p)[:200]!r}: not a model of this config "
                          f"({type(e).__name__})", key="experiment.init_model") from None
    return state_vector(template)
