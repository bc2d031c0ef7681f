"""Small GroupNorm CNN for images [N, C, H, W] (MedMNIST 28x28 or 64x64, any square).

GroupNorm (Wu & He, ECCV 2018) instead of BatchNorm: per-sample normalisation keeps each
example's gradient independent of the batch, which DP-SGD (Opacus) requires.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from ..registry import Params
from .base import MODELS, check_groups


class CNNParams(Params):
    channels: list[int] = Field(
        default_factory=lambda: [16, 32], min_length=1, description="conv widths, one per block"
    )
    groups: int = Field(4, ge=1, description="GroupNorm groups; must divide every width")
    pool: int = Field(4, ge=1, description="adaptive average pool to pool x pool before the head")
    hidden: int = Field(64, ge=1, description="width of the hidden dense layer")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _groups_divide(self) -> CNNParams:
        check_groups(self.channels, self.groups)
        return self


@MODELS.register("cnn", CNNParams, modalities=("image",))
def make_cnn(params: CNNParams, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """[N, C, H, W] -> logits [N, num_classes].

    Blocks: conv3x3 -> GroupNorm -> ReLU -> maxpool2 per entry of ``channels``, then
    AdaptiveAvgPool2d(pool) so any H = W works, a dense hidden layer and the classifier."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model.name = 'cnn': needs image input [C, H, W], got shape {tuple(input_shape)}"
        )
    c_in, h, w = input_shape
    if min(h, w) < 2 ** len(params.channels):
        raise ValueError(
            f"model.channels = {params.channels}: {len(params.channels)} pooling blocks need "
            f"images of at least {2 ** len(params.channels)} pixels, got {h}x{w}"
        )
    layers: list[nn.Module] = []
    for c_out in params.channels:
        layers += [
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
            nn.GroupNorm(params.groups, c_out),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(params.pool), nn.Flatten()]
    layers += [nn.Linear(c_in * params.pool * params.pool, params.hidden), nn.ReLU()]
    if params.dropout:
        layers.append(nn.Dropout(params.dropout))
    layers.append(nn.Linear(params.hidden, num_classes))
    return nn.Sequential(*layers)
