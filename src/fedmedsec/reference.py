"""Server-side inputs that some rules declare they need (registry capability
``needs_reference``): FLTrust's reference update g_0, the server's own update on its
clean root set (Cao et al., NDSS 2021)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .streams import Stream
from .training import load_state_vector, state_vector, train_kwargs, train_local

if TYPE_CHECKING:
    from .experiment import Setup


def root_update(setup: Setup, global_vec: torch.Tensor, server_round: int) -> torch.Tensor:
    """g_0 = (model after local training on the root set from ``global_vec``) - global_vec,
    Tensor[d], trained with the hospitals' recipe (same epochs, batch size, optimiser)."""
    d = setup.data
    model = setup.new_model()
    load_state_vector(model, global_vec)
    t = setup.cfg.train
    train_local(model, d.root_x, d.root_y,
                **train_kwargs(t, d.modality, server_round, setup.cfg.experiment.rounds),
                generator=setup.generator(Stream.ROOT_TRAINING, server_round))
    return state_vector(model) - global_vec
