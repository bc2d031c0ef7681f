"""Data poisoning attacks: label flip, noise, backdoor (BadNets), DBA, Neurotoxin, the
defense-aware PGD backdoor; backdoor triggers.

Importing this package registers the attacks in ``ATTACKS`` and the triggers in
``TRIGGERS``, including the image and ECG trigger modules when they exist.
"""

import importlib
import importlib.util

from . import backdoor, label_flip, neurotoxin, noise, pgd, triggers  # noqa: F401  (registration)
from .backdoor import default_target_label
from .neurotoxin import neurotoxin_mask
from .pgd import project_update
from .triggers import DEFAULT_TRIGGER, TRIGGERS, Trigger, TriggerParams, make_trigger

for _mod in ("image_triggers", "ecg_triggers"):
    if importlib.util.find_spec(f"{__name__}.{_mod}") is not None:
        importlib.import_module(f"{__name__}.{_mod}")

__all__ = [
    "DEFAULT_TRIGGER", "TRIGGERS", "Trigger", "TriggerParams", "default_target_label",
    "make_trigger", "neurotoxin_mask", "project_update",
]
