"""GroupNorm 1D CNN for ECG [N, leads, T] with global average pooling (any T).

GroupNorm instead of BatchNorm keeps per-example gradients independent (Opacus DP-SGD).
Global average pooling over time makes the network length-agnostic; the mean activation of
a beat detector is proportional to the beat rate, so rhythm classes stay learnable.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from ..registry import Params
from .base import MODELS, check_groups


class CNN1DParams(Params):
    channels: list[int] = Field(
        default_factory=lambda: [16, 32, 32, 32], min_length=1, description="conv widths"
    )
    kernel_size: int = Field(7, ge=1, description="temporal kernel (odd keeps length)")
    groups: int = Field(8, ge=1, description="GroupNorm groups; must divide every width")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _groups_divide(self) -> CNN1DParams:
        check_groups(self.channels, self.groups)
        return self


@MODELS.register("cnn1d", CNN1DParams, modalities=("ecg",))
def make_cnn1d(params: CNN1DParams, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """[N, leads, T] -> logits [N, num_classes].

    Blocks: conv1d(k) -> GroupNorm -> ReLU -> maxpool2 per entry of ``channels`` (pooling
    stops once T would fall below 2), then AdaptiveAvgPool1d(1) and a linear classifier."""
    if len(input_shape) != 2:
        raise ValueError(
            f"model.name = 'cnn1d': needs ECG input [leads, T], got shape {tuple(input_shape)}"
        )
    c_in, t = input_shape
    layers: list[nn.Module] = []
    for c_out in params.channels:
        layers += [
            nn.Conv1d(c_in, c_out, kernel_size=params.kernel_size, padding=params.kernel_size // 2),
            nn.GroupNorm(params.groups, c_out),
            nn.ReLU(),
        ]
        if t >= 4:
            layers.append(nn.MaxPool1d(2))
            t //= 2
        c_in = c_out
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten()]
    if params.dropout:
        layers.append(nn.Dropout(params.dropout))
    layers.append(nn.Linear(c_in, num_classes))
    return nn.Sequential(*layers)
