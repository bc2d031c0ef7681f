"""What a hospital's node lets the coordinator do: which files it opens, and what an error
reply may say. Pure functions (no Flower import) for the ClientApp to call.

The experiment config arrives from the coordinator, so without a policy the coordinator
chooses which local file a hospital opens (``data.path = "/etc/passwd"``), and the loader's
error text (a header line, a cell value) travels back in the error reply. The policy:

- **files**: the node's own ``data-path`` (its node config, set by the hospital's IT) wins
  over the experiment's ``data.path``; a node without one opens no file the coordinator
  names; other keys that would make the node open a file (``data.server_test``) or reach
  outside its data folder (``data.records`` with ``/`` or ``..``) are refused
  (``allowed_data_path``, ``restrict_config``);
- **errors**: an exception leaving the ClientApp becomes a fixed phrase plus the
  exception's type name (``safe_error``); the full message and traceback stay in the
  node's own log (``guarded``).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["NodeError", "NodePolicyError", "allowed_data_path", "guarded", "restrict_config", "safe_error"]

log = logging.getLogger("fedmedsec.node")

F = TypeVar("F", bound=Callable[..., Any])

#: the node-config key naming the hospital's own data file or folder
DATA_PATH = "data-path"
#: config keys that make a node open a file the coordinator would choose
FILE_KEYS = (("data", "server_test"),)
#: config keys whose entries name files inside the data folder (no separators, no "..")
NAME_KEYS = (("data", "records"), ("data", "test_records"))


class NodePolicyError(ValueError):
    """The coordinator asked this node for something its policy refuses (one line)."""


class NodeError(RuntimeError):
    """What a node sends back instead of an exception's own text (``safe_error``)."""


def allowed_data_path(node_config: Mapping[str, Any], requested: str | list[str] | None) -> str | None:
    """The file (or folder) this node opens for a dataset that asked for ``requested``
    (the experiment's ``data.path``; None: the dataset reads no file).

    The node's ``data-path`` wins whatever was requested; a node without one refuses any
    requested path (NodePolicyError) and returns None when nothing was requested."""
    own = node_config.get(DATA_PATH) if node_config is not None else None
    if own is not None:
        if not isinstance(own, str) or not own.strip():
            raise NodePolicyError(f"node config {DATA_PATH} must be a non-empty path string")
        return own
    if requested is None:
        return None
    raise NodePolicyError(
        f"this node has no {DATA_PATH} in its node config, so it opens no file the coordinator names "
        "(data.path); the hospital sets its own file there")


def restrict_config(cfg: dict[str, Any], node_config: Mapping[str, Any], reads_file: bool) -> dict[str, Any]:
    """A copy of the resolved experiment config (a TOML dict) as this node may run it:
    ``data.path`` replaced by ``allowed_data_path`` when the dataset ``reads_file``
    (removed when it reads none), and a NodePolicyError for any key in ``FILE_KEYS`` (the
    node would open a file the coordinator chose) or a ``NAME_KEYS`` entry that is not a
    plain file name. Never mutates ``cfg``."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()}
    data = out.setdefault("data", {})
    if not isinstance(data, dict):
        raise NodePolicyError("the experiment config's data section is not a table")
    for section, key in FILE_KEYS:
        sec = out.get(section)
        if isinstance(sec, dict) and sec.get(key) is not None:
            raise NodePolicyError(f"{section}.{key} names a file for this node to open; a node opens only "
                                  f"its own {DATA_PATH}")
    for section, key in NAME_KEYS:
        sec = out.get(section)
        names = sec.get(key) if isinstance(sec, dict) else None
        if names is None:
            continue
        if not isinstance(names, list) or not all(_plain_name(n) for n in names):
            raise NodePolicyError(f"{section}.{key}: entries must be plain record names inside the node's "
                                  f"{DATA_PATH} (no '/', '\\\\' or '..')")
    requested = data.get("path")
    if reads_file:
        data["path"] = allowed_data_path(node_config, requested if requested is not None else "")
    else:
        data.pop("path", None)
    return out


def _plain_name(name: Any) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= 255 and "/" not in name and "\\" not in name
            and "\x00" not in name and name not in (".", "..") and not name.startswith(".."))


# --------------------------------------------------------------------------- errors

#: exception type -> the phrase an error reply carries (the first match in the MRO wins)
_PHRASES: tuple[tuple[str, str], ...] = (
    ("NodePolicyError", "refused by this node's policy"),
    ("FileNotFoundError", "data file not found"),
    ("IsADirectoryError", "data path is not a file"),
    ("NotADirectoryError", "data path is not a folder"),
    ("PermissionError", "data file not readable (permission)"),
    ("UnicodeError", "data file is not text in the expected encoding"),
    ("OSError", "data file could not be read"),
    ("DataError", "data file refused by the loader"),
    ("PartitionError", "too few records for the requested split"),
    ("ConfigError", "experiment config refused by this node"),
    ("MemoryError", "out of memory on this node"),
    ("TimeoutError", "timed out on this node"),
)
_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_KEY = re.compile(r"^(experiment|data|model|train|attack|defense|detection|privacy|simulation|evasion)"
                  r"\.[a-z][a-z0-9_]{0,39}$")


def safe_error(exc: BaseException) -> str:
    """One line that may leave the hospital for ``exc``: a phrase from a fixed vocabulary
    chosen by the exception's type, the type's name and, for a ConfigError, the config key
    at fault (a key of the coordinator's own config, never a value). Nothing of the
    exception's message (a file's header line, a cell value, a path) is included."""
    phrase = "internal error on this node"
    for cls in type(exc).__mro__:
        match = next((p for name, p in _PHRASES if cls.__name__ == name), None)
        if match is not None:
            phrase = match
            break
    name = type(exc).__name__
    name = name if _TYPE_NAME.match(name) else "Exception"
    key = getattr(exc, "key", None)
    where = f" at {key}" if isinstance(key, str) and _KEY.match(key) else ""
    return f"{phrase} ({name}{where})"


def guarded(handler: F) -> F:
    """Decorator for a ClientApp handler: an exception is logged in full on the node (its
    own log) and re-raised as ``NodeError(safe_error(e))``, so the error reply Flower
    builds from it carries only the sanitized line."""

    @functools.wraps(handler)
    def wrapper(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every exception leaves sanitized
            log.exception("%s failed on this node", getattr(handler, "__name__", "handler"))
            raise NodeError(safe_error(e)) from None

    return wrapper  # type: ignore[return-value]
