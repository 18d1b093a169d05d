"""What made an output: the model, the hooklab version, the resolved parameters.

Every output (attribution, mixing, knockout, PECoRe) carries ``model`` (from
:func:`describe_model`) and ``parameters`` (every option the computation used, defaults
included), frozen with :func:`freeze` so that no output can change another's through a shared
mapping. :func:`thaw` turns them back into plain JSON-friendly values for saving.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import Tensor

from hooklab.version import __version__


def freeze(value: Any) -> Any:
    """Return a deeply immutable copy: mappings -> ``MappingProxyType``, lists -> tuples.

    Tensors are converted to nested tuples, so no tensor is shared with the caller.
    """
    if isinstance(value, Tensor):
        return freeze(value.tolist())
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple, set, frozenset, range)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return tuple(freeze(v) for v in items)
    return value


def thaw(value: Any) -> Any:
    """Return JSON-friendly plain values: mappings -> dicts, sequences -> lists.

    NaN/inf policy (one for every hooklab file and dict): JSON has no non-finite numbers, so
    they become the strings ``"nan"``, ``"inf"`` and ``"-inf"``, and :func:`unthaw` turns
    those three strings back into floats (a *string* option spelled exactly so reads back as
    the float). Objects without a JSON form become their ``repr``.
    """
    if isinstance(value, Tensor):
        return thaw(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, range)):
        return [thaw(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def unthaw_float(value: Any) -> Any:
    """Invert :func:`thaw` for one number: ``"nan"``, ``"inf"``, ``"-inf"`` -> float."""
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def unthaw(value: Any) -> Any:
    """Invert :func:`thaw`'s number policy deeply (lists and dicts stay lists and dicts)."""
    if isinstance(value, dict):
        return {k: unthaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unthaw(v) for v in value]
    return unthaw_float(value)


def config_digest(config: Mapping[str, Any]) -> str:
    """A short SHA-256 digest of a model config (keys sorted; private keys left out)."""
    clean = {
        k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"
    }
    text = json.dumps(thaw(clean), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_model(model) -> Mapping[str, Any]:
    """Name or path, architecture and config digest of a ``TransformerBridge`` (frozen).

    The name is the Hugging Face ``name_or_path`` the model was loaded from (``"toy"`` for the
    embedded model); the digest tells two checkpoints with the same name apart.
    """
    hf = getattr(model, "original_model", None)
    config = getattr(hf, "config", None)
    name = getattr(model, "hooklab_name", None) or getattr(config, "name_or_path", None)
    name = name or getattr(getattr(model, "cfg", None), "model_name", None) or type(model).__name__
    info: dict[str, Any] = {"name_or_path": str(name)}
    if config is not None:
        info["architecture"] = (getattr(config, "architectures", None) or [type(hf).__name__])[0]
        info["config_digest"] = config_digest(config.to_dict())
    cfg = getattr(model, "cfg", None)
    if cfg is not None and getattr(cfg, "dtype", None) is not None:
        info["dtype"] = str(cfg.dtype).removeprefix("torch.")
    return freeze(info)


def hooklab_version() -> str:
    """The installed hooklab version (recorded in every saved file)."""
    return __version__
