"""WDBC: the Wisconsin Diagnostic Breast Cancer data shipped inside scikit-learn.

569 fine-needle-aspirate records, 30 real-valued nuclear features, 2 classes. Real and
offline: ``sklearn.datasets.load_breast_cancer`` reads the copy in the sklearn wheel.
Labels follow sklearn: 0 = malignant, 1 = benign.
Source: Street, Wolberg and Mangasarian, "Nuclear feature extraction for breast tumor
diagnosis", 1993; UCI Machine Learning Repository.
"""

from __future__ import annotations

import numpy as np

from ..registry import NoParams
from .base import DATASETS, RawData


@DATASETS.register("wdbc", NoParams, modality="tabular")
def load_wdbc(params: NoParams, seed: int) -> RawData:
    from sklearn.datasets import load_breast_cancer

    ds = load_breast_cancer()
    return RawData(
        x=np.asarray(ds.data, dtype=np.float32),
        y=np.asarray(ds.target, dtype=np.int64),
        modality="tabular",
        num_classes=2,
        class_names=[str(c) for c in ds.target_names],
        feature_names=[str(f) for f in ds.feature_names],
        positive_class="malignant",  # sklearn's target 0
    )
