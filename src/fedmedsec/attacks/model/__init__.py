"""Model poisoning attacks on update vectors: sign flip, Gaussian, scaling (model
replacement), ALIE, IPM, min-max, min-sum, Fang, AGR-tailored. Importing registers them in
``ATTACKS``."""

from . import agr_tailored, alie, fang, ipm, min_max, simple  # noqa: F401  (registration)
from .agr_tailored import agr_tailored as agr_tailored_update
from .agr_tailored import maximise_gamma
from .alie import alie as alie_update
from .alie import alie_z
from .fang import fang_krum, fang_trimmed_mean, krum_index
from .ipm import ipm as ipm_update
from .min_max import largest_gamma
from .min_max import min_max as min_max_update
from .min_max import min_sum as min_sum_update
from .simple import gaussian as gaussian_update
from .simple import scale_update
from .simple import sign_flip as sign_flip_update

__all__ = [
    "agr_tailored_update", "alie_update", "alie_z", "fang_krum", "fang_trimmed_mean",
    "gaussian_update", "ipm_update", "krum_index", "largest_gamma", "maximise_gamma",
    "min_max_update", "min_sum_update", "scale_update", "sign_flip_update",
]
