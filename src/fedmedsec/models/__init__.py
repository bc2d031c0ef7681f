"""Small torch models, Opacus-compatible (GroupNorm, never BatchNorm)."""

from .base import MODELS, build_model
from . import cnn, cnn1d, mlp, resnet  # noqa: F401  (registers)

__all__ = ["MODELS", "build_model"]
