"""What the server measures on its own held-out data: clean accuracy and loss of the
global model, and the success of a targeted attack on triggered copies of the test set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from .training import evaluate, predict

if TYPE_CHECKING:
    from .experiment import Setup


def server_metrics(setup: Setup, model: nn.Module) -> dict[str, float | None]:
    """clean_accuracy and test_loss on the server's test set; attack_success_rate (None
    without a targeted attack)."""
    d = setup.data
    loss, acc = evaluate(model, d.x_test, d.y_test)
    return {"clean_accuracy": acc, "test_loss": loss,
            "attack_success_rate": attack_success(setup, model)}


def attack_success(setup: Setup, model: nn.Module) -> float | None:
    """ASR = share of eligible triggered test inputs (true label not the target) that the
    model classifies as the attack's target label; None for untargeted attacks."""
    attack = setup.attack
    if attack is None:
        return None
    d = setup.data
    got = attack.asr_inputs(d.x_test, d.y_test, setup.attack_context())
    if got is None:
        return None
    x_eval, eligible = got
    if not np.any(eligible):
        return None
    pred = predict(model, x_eval[eligible]).argmax(1)
    return float(np.mean(pred == attack.target_label))
