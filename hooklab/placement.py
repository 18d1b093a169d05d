"""Check where a model is asked to go (``device_map``, ``n_devices``) before loading it.

Hugging Face and Accelerate place modules from a ``device_map``; a key that names no module is
ignored there, a device that does not exist fails deep inside torch, and ``n_devices=0`` loads
on the CPU without a word. :func:`check_placement` turns each of these into one clear error,
before any weight is read, naming the bad key or value and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

#: Accelerate's placement strategies, accepted as a whole ``device_map``.
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
#: Non-torch devices a device map entry may name.
SPECIAL_DEVICES = ("disk", "meta")


def _n_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_device(value: object, where: str) -> None:
    """Raise ValueError unless ``value`` names a device that exists here.

    Args:
        value: a GPU index (int), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"disk"``...
        where: what holds it (e.g. ``"device_map['lm_head']"``), named in the error.
    """
    gpus = _n_gpus()
    have = f"this machine has {gpus} GPU(s)" if gpus else "this machine has no GPU"
    if isinstance(value, bool) or not isinstance(value, (int, str, torch.device)):
        raise ValueError(
            f"{where} must be a device (a GPU index, 'cpu', 'cuda:0', 'disk'), got "
            f"{type(value).__name__}: {value!r}."
        )
    if isinstance(value, int):
        if not 0 <= value < gpus:
            valid = f"a GPU index 0..{gpus - 1} or 'cpu'" if gpus else "'cpu'"
            raise ValueError(f"{where} = {value} names GPU {value}, but {have}. Use {valid}.")
        return
    if isinstance(value, str) and value in SPECIAL_DEVICES:
        return
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"{where} = {value!r} is not a device; use 'cpu', 'cuda', 'cuda:N', 'disk' or a GPU "
            "index."
        ) from None
    if device.type == "cuda" and (gpus == 0 or (device.index or 0) >= gpus):
        raise ValueError(f"{where} = {value!r} asks for a GPU, but {have}. Use 'cpu' instead.")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"{where} = {value!r}: device type {device.type!r} is not supported for placement "
            "here; use 'cpu', 'cuda:N' or 'disk'."
        )


def check_n_devices(n_devices: object) -> None:
    """Raise ValueError unless ``n_devices`` is a positive int no larger than the GPU count."""
    if isinstance(n_devices, bool) or not isinstance(n_devices, int) or n_devices < 1:
        raise ValueError(
            f"n_devices must be a positive int (the number of GPUs to split the model over), got "
            f"{n_devices!r}. Leave it out to load on one device."
        )
    gpus = _n_gpus()
    if n_devices > gpus:
        raise ValueError(
            f"n_devices={n_devices} asks for {n_devices} GPUs, but this machine has {gpus}. "
            f"Pass n_devices <= {gpus}, or load on the CPU (device='cpu')."
        )


def check_device_map(device_map: object, module_names: Callable[[], list[str] | None]) -> None:
    """Raise ValueError for a device map with an unknown module or a device that is not here.

    Args:
        device_map: a strategy (``"auto"``...), one device for everything (``"cpu"``), or
            ``{module name: device}``.
        module_names: returns the model's module names (``""`` is the whole model), or None
            when they cannot be known before loading (then keys are not checked).
    """
    if isinstance(device_map, str) and device_map in STRATEGIES:
        return
    if isinstance(device_map, (str, int, torch.device)) and not isinstance(device_map, bool):
        check_device(device_map, "device_map")
        return
    if not isinstance(device_map, Mapping) or not device_map:
        raise ValueError(
            f"device_map must be a strategy ({', '.join(map(repr, STRATEGIES))}), one device "
            f"('cpu', 'cuda:0') or a non-empty {{module name: device}} dict, got {device_map!r}."
        )
    for key, value in device_map.items():
        check_device(value, f"device_map[{key!r}]")
    names = module_names()
    if names is None:
        return
    known = set(names)
    unknown = [k for k in device_map if k not in known]
    if unknown:
        from hooklab.registry import unknown_name_error

        err = unknown_name_error("module in device_map", unknown[0], sorted(known - {""}))
        raise ValueError(f"{err.args[0]} The map's keys are the Hugging Face model's modules.")


def meta_module_names(config_source: Any) -> list[str] | None:
    """Module names of the model a checkpoint (path or config) describes, built on the meta
    device (no weights read); None when its config cannot be read here."""
    try:
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForSeq2SeqLM,
        )

        config = AutoConfig.from_pretrained(config_source)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(config)
    except (OSError, ValueError, KeyError, ImportError):
        return None
    return [name for name, _ in model.named_modules()]


def check_placement(kwargs: Mapping[str, Any], config_source: Any) -> None:
    """Check ``device_map`` and ``n_devices`` of a :func:`hooklab.load` call before loading.

    Args:
        kwargs: the load call's extra keyword arguments.
        config_source: a checkpoint directory or hub name (for the module names), or None.
    """
    if kwargs.get("n_devices") is not None:
        check_n_devices(kwargs["n_devices"])
    if kwargs.get("device_map") is not None:
        check_device_map(
            kwargs["device_map"],
            lambda: None if config_source is None else meta_module_names(config_source),
        )


__all__ = ["check_device", "check_device_map", "check_n_devices", "check_placement"]
