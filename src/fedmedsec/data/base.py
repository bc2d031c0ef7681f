"""The dataset interface: a loader returns raw arrays; the pipeline splits and preprocesses.

A loader is registered in ``DATASETS`` under ``data.name`` with a parameter model for its
own keys (``data.path``, ``data.target``, ...). It returns ``RawData``; it never downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..registry import Registry

Modality = Literal["tabular", "image", "ecg"]


@dataclass
class RawData:
    """Records before the federated split.

    x: float32 [N, *input_shape] (tabular [N, F]; image [N, C, H, W] in [0, 1];
       ecg [N, leads, T]). y: int64 [N] in 0..num_classes-1.
    x_test / y_test: an official held-out test split when the dataset has one (MedMNIST);
       otherwise None and the pipeline holds out ``data.test_fraction`` stratified.
    sites: str [N] the hospital of each record (for ``partition = "natural"``), or None.
    test_sites: str [N_test] the same for the official test split, or None.
    categorical: for tabular data, a bool [F] mask of one-hot/categorical columns that the
       standardiser leaves alone; None = all numeric.
    notes: lines to show the user (e.g. "imputed 12 missing values in 3 columns").
    positive_class: the class a missed diagnosis misses (e.g. "malignant"), by name or
       index, for sensitivity / specificity; None when the dataset does not say.
    """

    x: np.ndarray
    y: np.ndarray
    modality: Modality
    num_classes: int
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    sites: np.ndarray | None = None
    test_sites: np.ndarray | None = None
    categorical: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    positive_class: int | str | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


#: name -> loader(params, seed: int) -> RawData. Raise ``DataError`` for bad files.
DATASETS: Registry = Registry("data")


class DataError(ValueError):
    """A data file or dataset setting is wrong; the message is one line for the user."""
