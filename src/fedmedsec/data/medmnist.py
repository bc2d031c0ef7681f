"""MedMNIST loader (Yang et al., "MedMNIST v2", Scientific Data 2023) from a local .npz.

The file holds ``{train,val,test}_images`` (uint8, (N,H,W) grayscale or (N,H,W,3) RGB, square)
and ``{train,val,test}_labels`` (integers, (N,1)). Multi-label files (ChestMNIST, (N,14))
are refused: the testbed's tasks are single-label. The official test split becomes
``RawData.x_test``; val is merged into the training pool unless ``use_val = false``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from ..registry import Params
from .base import DATASETS, DataError, RawData

SPLITS = ("train", "val", "test")
#: more classes than any MedMNIST task (11 at most) by far; a label beyond is a damaged file
MAX_CLASSES = 1000


class MedMNISTParams(Params):
    path: str | list[str] = Field(description="a MedMNIST .npz file (never downloaded), or one per hospital (a list, or a directory of .npz files)")
    use_val: bool = Field(True, description="merge the val split into the training pool")
    num_classes: int | None = Field(None, ge=2, le=MAX_CLASSES, description="default: max label + 1")


def _images(arr: np.ndarray, key: str, path: Path) -> np.ndarray:
    """uint8 (N,H,W) | (N,H,W,C) | (N,C,H,W) -> float32 [N, C, H, W] in [0, 1]."""
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[-1] in (1, 3) and arr.shape[1] not in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)  # channels last (the MedMNIST layout)
        elif arr.shape[1] not in (1, 3):
            raise DataError(f"{path}: {key} has shape {arr.shape}; expected (N,H,W) or (N,H,W,3)")
    else:
        raise DataError(f"{path}: {key} has shape {arr.shape}; expected (N,H,W) or (N,H,W,3)")
    if arr.shape[2] != arr.shape[3]:
        raise DataError(f"{path}: {key} images are {arr.shape[2]}x{arr.shape[3]}; expected square")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    out = arr.astype(np.float32)
    if out.size and (out.min() < 0.0 or out.max() > 1.0):
        raise DataError(f"{path}: {key} is {arr.dtype} outside [0, 1]; expected uint8 images")
    return out


def _labels(arr: np.ndarray, key: str, path: Path, n: int) -> np.ndarray:
    """(N,1) or (N,) integers -> int64 [N]; multi-label (N,k>1) is refused."""
    if arr.ndim == 2 and arr.shape[1] > 1:
        raise DataError(
            f"{path}: {key} has shape {arr.shape}: multi-label MedMNIST (e.g. ChestMNIST) is not "
            "supported; use a single-label dataset"
        )
    arr = arr.reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"{path}: {key} has {arr.shape[0]} labels for {n} images")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key} holds {arr.dtype} labels; expected integers")
    if not np.issubdtype(arr.dtype, np.integer) and arr.dtype.kind != "b":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)) or (arr.size and np.abs(arr).max() > 2**62):
            raise DataError(f"{path}: {key} holds non-integer labels")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > 2**62:
        raise DataError(f"{path}: {key} holds label {int(arr.max())}, beyond any class count")
    y = arr.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{path}: {key} holds negative label {int(y.min())}")
    return y


def _array(npz, key: str, path: Path) -> np.ndarray:
    """One array of the archive (read lazily by numpy): a damaged member (bad CRC, a
    truncated entry) or an object array (a pickle, never loaded) is a one-line DataError."""
    try:
        return npz[key]
    except Exception as exc:  # zipfile / numpy format errors
        raise DataError(f"{path}: {key} cannot be read ({type(exc).__name__}: {str(exc)[:120]})") from None


@DATASETS.register("medmnist", MedMNISTParams, modality="image")
def load_medmnist(params: MedMNISTParams, seed: int) -> RawData:
    """Read ``params.path``: x float32 [N, C, H, W] in [0, 1], y int64 [N]; official test
    split -> x_test / y_test. Deterministic (``seed`` unused)."""
    path = Path(params.path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such MedMNIST file (data.path)")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # zip/format errors from numpy: one line for the user
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    with npz:
        needed = [f"{s}_{k}" for s in SPLITS if s != "val" or params.use_val for k in ("images", "labels")]
        missing = [k for k in needed if k not in npz.files]
        if missing:
            raise DataError(f"{path}: missing keys {missing}; found {sorted(npz.files)}")
        xs, ys = {}, {}
        for split in SPLITS:
            if split == "val" and not params.use_val:
                continue
            xs[split] = _images(_array(npz, f"{split}_images", path), f"{split}_images", path)
            ys[split] = _labels(_array(npz, f"{split}_labels", path), f"{split}_labels", path, len(xs[split]))
    shapes = {s: xs[s].shape[1:] for s in xs}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{path}: splits have different image shapes {shapes}")
    pool = ["train", "val"] if params.use_val else ["train"]
    x = np.concatenate([xs[s] for s in pool])
    y = np.concatenate([ys[s] for s in pool])
    if len(x) == 0:
        raise DataError(f"{path}: the training split is empty")
    if len(xs["test"]) == 0:
        raise DataError(f"{path}: the test split (test_images) is empty; the server evaluates on it")
    top = int(max(y.max(initial=0), ys["test"].max(initial=0)))
    if params.num_classes is None and top >= MAX_CLASSES:
        raise DataError(f"{path}: label {top} would make {top + 1} classes (at most {MAX_CLASSES}); "
                        "a damaged label column? (data.num_classes)")
    num_classes = params.num_classes if params.num_classes is not None else top + 1
    if top >= num_classes:
        raise DataError(f"{path}: label {top} does not fit data.num_classes = {num_classes}")
    if num_classes < 2:
        raise DataError(f"{path}: only one class (label 0) in the file")
    c, h, w = x.shape[1:]
    return RawData(
        x=x,
        y=y,
        modality="image",
        num_classes=num_classes,
        x_test=xs["test"],
        y_test=ys["test"],
        notes=(
            f"MedMNIST {path.name}: {len(x)} training images"
            f"{' (train+val)' if params.use_val else ''}, {len(xs['test'])} official test, "
            f"{c}x{h}x{w}, {num_classes} classes",
        ),
    )
