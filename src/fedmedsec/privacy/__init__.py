"""Privacy: record-level DP-SGD (Opacus), client-level DP-FedAvg, accounting, membership
inference, data reconstruction from updates, gradient pruning, secure aggregation. Pure functions and small dataclasses; nothing here imports flwr.

Import this package before anything else imports Opacus: it imports Opacus with the root
and flwr loggers protected (see :mod:`fedmedsec.privacy.accounting`).
"""

from .accounting import epsilon_of, merge_history, noise_for_target_epsilon, rdp_accountant
from .central import (
    central_dp_epsilon_or_reason,
    central_epsilon,
    clip_updates,
    dp_fedavg,
)
from .dp_sgd import (
    DPTrainResult,
    make_private_compatible,
    steps_per_epoch,
    train_dp_sgd,
)
from .mia import (
    MIAResult,
    balanced_members,
    lira_offline,
    logit_confidence,
    loss_threshold_attack,
    mia_evaluate,
    per_example_losses,
    roc_summary,
)
from .pruning import prune_update, prune_updates
from .reconstruction import (
    ReconstructionParams,
    ReconstructionResult,
    closed_form_first_linear,
    reconstruct,
    reconstruction_audit,
    score_reconstruction,
)
from .secure_agg import FixedPoint, secure_sum, server_view

__all__ = [
    "DPTrainResult",
    "FixedPoint",
    "MIAResult",
    "ReconstructionParams",
    "ReconstructionResult",
    "balanced_members",
    "central_dp_epsilon_or_reason",
    "central_epsilon",
    "clip_updates",
    "closed_form_first_linear",
    "dp_fedavg",
    "epsilon_of",
    "lira_offline",
    "logit_confidence",
    "loss_threshold_attack",
    "make_private_compatible",
    "merge_history",
    "mia_evaluate",
    "noise_for_target_epsilon",
    "per_example_losses",
    "prune_update",
    "prune_updates",
    "rdp_accountant",
    "reconstruct",
    "reconstruction_audit",
    "roc_summary",
    "score_reconstruction",
    "secure_sum",
    "server_view",
    "steps_per_epoch",
    "train_dp_sgd",
]
