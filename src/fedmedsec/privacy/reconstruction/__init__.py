"""Data reconstruction from a hospital's update by an honest-but-curious server (issue 16).

Gradient inversion (DLG, iDLG, Inverting Gradients) for FedSGD and FedAvg updates of the
fedmedsec models, the closed form for a first linear layer, label recovery, and scores
against a baseline guess. See :mod:`.invert` for the threat model and the methods, and
:mod:`.run` for the audit step of a run (``[reconstruction]``).
"""

from ._functional import Layout, param_layout, simulate_update
from .audit import ReconstructionParams, client_update, reconstruction_audit
from .invert import (
    ReconstructionResult,
    closed_form_first_linear,
    reconstruct,
    total_variation,
)
from .labels import idlg_label, label_counts, labels_from_counts
from .metrics import (
    PSNR_CAP_DB,
    correlation,
    match_records,
    mse,
    psnr,
    score_reconstruction,
    ssim,
)
from .run import ReconstructionRecords, curious_server_audit, save_reconstruction

__all__ = [
    "PSNR_CAP_DB",
    "Layout",
    "ReconstructionParams",
    "ReconstructionRecords",
    "ReconstructionResult",
    "client_update",
    "closed_form_first_linear",
    "correlation",
    "curious_server_audit",
    "idlg_label",
    "label_counts",
    "labels_from_counts",
    "match_records",
    "mse",
    "param_layout",
    "psnr",
    "reconstruct",
    "reconstruction_audit",
    "save_reconstruction",
    "score_reconstruction",
    "simulate_update",
    "ssim",
    "total_variation",
]
