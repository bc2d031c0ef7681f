"""What ``fedmedsec list`` shows: every registered component with its parameters (type,
default, constraints, description), a one-line description and the paper it implements.

The registries fill when the component modules are imported, and those import torch, scipy
and pandas (about 2.5 s). The catalogue built from them is plain JSON, cached in
``$XDG_CACHE_HOME/fedmedsec/`` (``~/.cache/fedmedsec/``) under a hash of every source file of
the package (about 2 ms to compute): a listing after the first reads the cache without
importing torch, and any change to a source file changes the key, so the next listing
rebuilds the catalogue from the live registries. Nothing is ever read from a stale cache.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

#: every kind of component, in the order a config file names them
KINDS = ("data", "data.partition", "model", "attack", "attack.trigger", "defense", "defense.pre", "detection")
ALIASES = {
    "dataset": "data", "datasets": "data", "partition": "data.partition", "partitions": "data.partition",
    "models": "model", "attacks": "attack", "trigger": "attack.trigger", "triggers": "attack.trigger",
    "defenses": "defense", "aggregator": "defense", "aggregators": "defense", "pre": "defense.pre",
    "detector": "detection", "detectors": "detection",
}
PACKAGE = Path(__file__).resolve().parent
#: "(Blanchard et al., NeurIPS 2017)", "(Baruch, Baruch and Goldberg, NeurIPS 2019)",
#: "(Yin et al., ICML 2018, Definition 2)" (the part after the year is left out)
_CITATION = re.compile(r"\(([A-Z][^()]{2,300}?(?:1[89]|20)\d\d[a-z]?)(?:,[^()]{0,40})?\)")


def resolve_kind(kind: str) -> str:
    """A kind or one of its aliases -> the kind; an unknown one is a one-line ValueError."""
    k = ALIASES.get(kind.strip().lower(), kind.strip().lower())
    if k not in KINDS:
        raise ValueError(f"fedmedsec list {kind!r}: unknown kind; choose one of {', '.join(KINDS)}")
    return k


# --------------------------------------------------------------------------- building


def _registry(kind: str):
    if kind == "attack.trigger":
        from .attacks.data.triggers import TRIGGERS

        return TRIGGERS
    from .components import registry_for

    return registry_for(kind)


def _type(ann: Any) -> str:
    if ann is type(None):
        return "None"
    origin, args = get_origin(ann), get_args(ann)
    if origin in (Union, types.UnionType):
        return " | ".join(_type(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None and getattr(origin, "__name__", "") == "Annotated":
        return _type(args[0])
    if origin in (list, tuple, dict, set, frozenset):
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _type(a) for a in args)}]"
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))


_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "multiple of",
        "min_length": "length >=", "max_length": "length <=", "pattern": "matches"}


def _constraints(field) -> str:
    out = []
    for m in field.metadata:
        for attr, op in _OPS.items():
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{op} {v!r}" if isinstance(v, str) else f"{op} {v:g}" if isinstance(v, float) else f"{op} {v}")
    return ", ".join(out)


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)


def _doc_params(doc: str | None, names: list[str]) -> dict[str, str]:
    """``name: text`` in a Params docstring -> {name: text}, for the model's field names
    (one per line or several in a sentence: ``niters: repetitions; b: coordinates ...``)."""
    text = " ".join((doc or "").split())
    if not text or not names:
        return {}
    alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    hits = list(re.finditer(rf"(?:^|(?<=[\s;.]))({alts})\s*(?:\([^)]*\))?\s*:\s+", text))
    out = {}
    for m, nxt in zip(hits, [*hits[1:], None]):
        seg = text[m.end():nxt.start() if nxt else len(text)].strip().rstrip(";,").strip()
        out.setdefault(m.group(1), seg)
    return out


#: words whose period does not end a sentence
_ABBREV = re.compile(r"(?:\bal|e\.g|i\.e|cf|vs|Eq|Eqs|Fig|Sec|Alg|Def|resp|approx|No)\.$")


def _first_sentence(doc: str | None, limit: int = 120) -> str:
    para = inspect.cleandoc(doc or "").split("\n\n")[0]
    text = " ".join(para.split())
    for m in re.finditer(r"[.;:](?=\s)", text):
        if m.start() < 3 or (text[m.start()] == "." and _ABBREV.search(text[:m.start() + 1])):
            continue
        if text[m.start()] == ":":
            continue  # "Krum (...): output ..." reads on
        text = text[:m.start() + (text[m.start()] == ".")]
        break
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " …"
    return text


_AUTHORS = re.compile(r"[A-Z][A-Za-z'-]+(?: et al\.|(?:, [A-Z][A-Za-z'-]+)* and [A-Z][A-Za-z'-]+)")


def _citation(*docs: str | None) -> str:
    """The first "(Authors, Venue Year)" in the docstrings; a parenthesis that holds only the
    venue takes the authors and title just before it (``Fang et al., "Title" (USENIX 2020)``)."""
    for d in docs:
        text = " ".join((d or "").split())
        m = _CITATION.search(text)
        if not m:
            continue
        cite = m.group(1)
        if "," not in cite and not _AUTHORS.search(cite):
            before = text[max(0, m.start() - 250):m.start()]
            who = list(_AUTHORS.finditer(before))
            if who:
                cite = before[who[-1].start():].strip().rstrip(",") + ", " + cite
        return cite
    return ""


def _entry(e, shared_module: bool) -> dict[str, Any]:
    """One registry entry; ``shared_module``: its module registers other entries of the kind
    too, so the module docstring's citation may be another entry's."""
    obj = e.obj
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    mod_doc = getattr(module, "__doc__", None)
    own_doc = inspect.getdoc(obj) if (getattr(obj, "__doc__", None) or "").strip() else None
    params_doc = _doc_params(e.params.__doc__, list(e.params.model_fields))
    params = []
    for name, f in e.params.model_fields.items():
        if f.is_required():
            default: Any = "required"
        elif f.default_factory is not None:
            default = _jsonable(f.default_factory())
        else:
            default = _jsonable(f.default)
        params.append({"name": name, "type": _type(f.annotation), "default": default,
                       "required": f.is_required(), "constraints": _constraints(f),
                       "description": f.description or params_doc.get(name, "")})
    meta = {}
    for k, v in sorted(e.meta.items()):
        if callable(v):
            d = _first_sentence(inspect.getdoc(v))
            if d:
                meta[k] = d
        elif isinstance(v, (bool, int, float, str)) or (
                isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v)):
            meta[k] = list(v) if isinstance(v, tuple) else v
    return {"name": e.name, "description": _first_sentence(own_doc) or _first_sentence(mod_doc),
            "citation": _citation(own_doc) or ("" if shared_module and own_doc else _citation(mod_doc)),
            "params": params, "meta": meta}


def build() -> dict[str, list[dict[str, Any]]]:
    """The catalogue from the live registries (imports every component module)."""
    out = {}
    for kind in KINDS:
        entries = sorted(_registry(kind), key=lambda e: e.name)
        per_module: dict[str, int] = {}
        for e in entries:
            per_module[getattr(e.obj, "__module__", "")] = per_module.get(getattr(e.obj, "__module__", ""), 0) + 1
        out[kind] = [_entry(e, per_module[getattr(e.obj, "__module__", "")] > 1) for e in entries]
    return out


# --------------------------------------------------------------------------- cache


def source_key() -> str:
    """Hash of the package's source files, the Python version and the package version."""
    h = hashlib.sha1()
    h.update(sys.version.encode())
    for p in sorted(PACKAGE.rglob("*.py")):
        h.update(str(p.relative_to(PACKAGE)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedmedsec"


def load(refresh: bool = False) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """(catalogue, from_cache). Reads the cache for the current sources, else builds it
    from the registries and writes it (a cache that cannot be written is skipped)."""
    path = cache_dir() / f"catalogue-{source_key()}.json"
    if not refresh:
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and set(data) == set(KINDS):
                return data, True
        except (OSError, ValueError, UnicodeDecodeError):
            pass
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        for old in path.parent.glob("catalogue-*.json"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass
    return data, False
