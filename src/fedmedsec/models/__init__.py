"""Small torch models, Opacus-compatible (GroupNorm, never BatchNorm)."""

from . import cnn, cnn1d, mlp, resnet  # noqa: F401  (registers)
from .base import MODELS, build_model

__all__ = ["MODELS", "build_model"]
