"""What a malicious hospital learns from the global models it sees, and where the model's
parameters sit in the flat state vector.

The observed benign direction (Neurotoxin, Zhang et al., ICML 2022, Sec. 3): the change of
the global model between the last two rounds the hospital saw, g_t - g_{t'}, the only benign
update a real attacker can observe (it includes every client's contribution). It is kept in
the hospital's ``state`` dict, across rounds, under these keys (values: torch.Tensor[d]
float32 in the ``training.state_vector`` layout, and an int):
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: the latest global model this hospital saw, Tensor[d]
LAST_GLOBAL = "attack.last_global"
#: the global model it saw before that, Tensor[d]
PREV_GLOBAL = "attack.prev_global"
#: the server round of LAST_GLOBAL, int
LAST_ROUND = "attack.last_round"
STATE_KEYS = (LAST_GLOBAL, PREV_GLOBAL, LAST_ROUND)


def observe_global(global_vec: torch.Tensor, state: dict[str, Any], round: int) -> None:
    """Record the round's global model: LAST -> PREV, global -> LAST. A second call in the
    same round changes nothing (the round loop and ``train_hooks`` may both call it)."""
    if state.get(LAST_ROUND) == round and LAST_GLOBAL in state:
        return
    if LAST_GLOBAL in state:
        state[PREV_GLOBAL] = state[LAST_GLOBAL]
    state[LAST_GLOBAL] = global_vec.detach().to(torch.float32).clone()
    state[LAST_ROUND] = int(round)


def observed_direction(state: dict[str, Any]) -> torch.Tensor | None:
    """LAST - PREV, Tensor[d] float32, or None before the hospital has seen two globals (or
    when their sizes differ)."""
    last, prev = state.get(LAST_GLOBAL), state.get(PREV_GLOBAL)
    if last is None or prev is None or last.shape != prev.shape:
        return None
    return last - prev


def parameter_slices(model: nn.Module, d: int) -> list[tuple[nn.Parameter, int, int]]:
    """(parameter, start, end) for each trainable parameter in the state-vector layout
    (``model.state_dict()`` values in order; buffers are skipped). ValueError if the state
    has not exactly d values."""
    out, i = [], 0
    for t in model.state_dict(keep_vars=True).values():
        n = t.numel()
        if isinstance(t, nn.Parameter) and t.requires_grad:
            out.append((t, i, i + n))
        i += n
    if i != d:
        raise ValueError(f"the global vector has {d} values, the model's state {i}")
    return out


def parameter_mask(model: nn.Module, d: int) -> torch.Tensor:
    """Tensor[d] bool: True on the coordinates of trainable parameters."""
    mask = torch.zeros(d, dtype=torch.bool)
    for _, a, b in parameter_slices(model, d):
        mask[a:b] = True
    return mask


def parameter_vector(model: nn.Module) -> torch.Tensor:
    """The trainable parameters, flattened in state-vector order, float32 Tensor[P]."""
    return torch.cat([
        t.detach().reshape(-1).float()
        for t in model.state_dict(keep_vars=True).values()
        if isinstance(t, nn.Parameter) and t.requires_grad
    ])
