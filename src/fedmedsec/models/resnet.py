"""Small ResNet with GroupNorm for images [N, C, H, W] (``resnet``)
and ECG [N, leads, T] (``resnet1d``).

Residual blocks after He et al. (CVPR 2016, "basic block": conv3x3-norm-ReLU-conv3x3-norm,
plus the identity or a strided 1x1 projection, then ReLU), with GroupNorm (Wu & He, ECCV
2018) in place of BatchNorm: per-example normalisation keeps each record's gradient
independent of the batch, which DP-SGD (Opacus) requires. Stage s (widths ``channels[s]``)
holds ``blocks`` blocks; every stage but the first halves the resolution with stride 2 in
its first block. The residual branch's last GroupNorm starts at zero scale (Goyal et al.
2017, "zero-init residual"), so each block starts as the identity: training is stable
at high learning rates without BatchNorm's running statistics. Global average pooling
makes the network size-agnostic. No in-place ops (Opacus hooks need the inputs).
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from ..registry import Params
from .base import MODELS, check_groups


class ResNetParams(Params):
    channels: list[int] = Field(
        default_factory=lambda: [16, 32, 64], min_length=1, description="stage widths"
    )
    blocks: int = Field(1, ge=1, le=8, description="residual blocks per stage")
    groups: int = Field(8, ge=1, description="GroupNorm groups; must divide every width")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="before the classifier")

    @model_validator(mode="after")
    def _groups_divide(self) -> ResNetParams:
        check_groups(self.channels, self.groups)
        return self


class ResNet1DParams(ResNetParams):
    kernel_size: int = Field(7, ge=3, description="temporal kernel (odd keeps length)")
    stem_stride: int = Field(2, ge=1, le=8, description="stride of the first convolution")


class _Block(nn.Module):
    def __init__(self, conv, c_in: int, c_out: int, stride: int, groups: int, k: int) -> None:
        super().__init__()
        self.conv1 = conv(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.conv2 = conv(c_out, c_out, k, padding=k // 2, bias=False)
        self.norm2 = nn.GroupNorm(groups, c_out)
        nn.init.zeros_(self.norm2.weight)  # the block starts as the identity
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                conv(c_in, c_out, 1, stride=stride, bias=False), nn.GroupNorm(groups, c_out)
            )

    def forward(self, x):
        h = self.act1(self.norm1(self.conv1(x)))
        return self.act2(self.norm2(self.conv2(h)) + self.skip(x))


def _resnet(conv, pool, p: ResNetParams, c_in: int, num_classes: int, k: int,
            stem_stride: int) -> nn.Module:
    c0 = p.channels[0]
    layers: list[nn.Module] = [
        conv(c_in, c0, k, stride=stem_stride, padding=k // 2, bias=False),
        nn.GroupNorm(p.groups, c0),
        nn.ReLU(),
    ]
    c = c0
    for s, width in enumerate(p.channels):
        for b in range(p.blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            layers.append(_Block(conv, c, width, stride, p.groups, k))
            c = width
    layers += [pool(1), nn.Flatten()]
    if p.dropout:
        layers.append(nn.Dropout(p.dropout))
    layers.append(nn.Linear(c, num_classes))
    return nn.Sequential(*layers)


@MODELS.register("resnet", ResNetParams, modalities=("image",))
def make_resnet(params: ResNetParams, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """[N, C, H, W] -> logits [N, num_classes]: stem conv3x3 (stride 1) -> GroupNorm ->
    ReLU, ``len(channels)`` stages of ``blocks`` basic blocks, global average pooling, a
    linear classifier. Default [16, 32, 64] x 1 block: 78k parameters for 1x28x28."""
    if len(input_shape) != 3:
        raise ValueError(
            f"model.name = 'resnet': needs image input [C, H, W], got shape {tuple(input_shape)}"
        )
    c_in, h, w = input_shape
    need = 2 ** (len(params.channels) - 1)
    if min(h, w) < need:
        raise ValueError(
            f"model.channels = {params.channels}: {len(params.channels) - 1} strided stages "
            f"need images of at least {need} pixels, got {h}x{w}"
        )
    return _resnet(nn.Conv2d, nn.AdaptiveAvgPool2d, params, c_in, num_classes, 3, 1)


@MODELS.register("resnet1d", ResNet1DParams, modalities=("ecg",))
def make_resnet1d(params: ResNet1DParams, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """[N, leads, T] -> logits [N, num_classes]: stem conv1d(kernel_size, stem_stride) ->
    GroupNorm -> ReLU, stages of basic blocks (kernel_size), global average pooling over
    time (any T), a linear classifier."""
    if len(input_shape) != 2:
        raise ValueError(
            f"model.name = 'resnet1d': needs ECG input [leads, T], got shape {tuple(input_shape)}"
        )
    c_in, t = input_shape
    need = params.stem_stride * 2 ** (len(params.channels) - 1)
    if t < need:
        raise ValueError(
            f"model.channels = {params.channels}: stem stride {params.stem_stride} and "
            f"{len(params.channels) - 1} strided stages need at least {need} samples, got {t}"
        )
    return _resnet(nn.Conv1d, nn.AdaptiveAvgPool1d, params, c_in, num_classes,
                   params.kernel_size, params.stem_stride)
