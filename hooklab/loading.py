"""Load a language model as a TransformerLens ``TransformerBridge``.

All hooklab methods run on the bridge in its default mode: raw Hugging Face weights, no weight
processing. There ``blocks.{l}.attn.hook_v`` holds the true value vectors (value bias included)
and logits equal the Hugging Face model's. TransformerLens' compatibility mode folds layer norms
and the value bias into other weights; pass ``compatibility_mode=True`` only for analyses that
need HookedTransformer's coordinates (logit lens and the like), never for value zeroing.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

TOY_NAME = "toy"
TOY_MT_NAME = "toy-mt"
TOY_RAG_NAME = "toy-rag"
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Map ``None`` / a name such as ``"bf16"`` / a ``torch.dtype`` to a ``torch.dtype``."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"Unknown dtype {dtype!r}. Valid dtypes: {', '.join(_DTYPES)}.")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return ``device`` as a ``torch.device``; ``None`` picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Invalid device {device!r}: {err}. Use e.g. 'cpu' or 'cuda:0'.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available here.")
    return resolved


def _looks_like_path(name: str) -> bool:
    """Hub names are ``name`` or ``org/name``; anything else that names a file is a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _boot(source, *, device, dtype, tokenizer=None, hf_model=None, **kwargs):
    """Boot the bridge. TransformerLens adjusts the tokenizer it is given (a BOS token where the
    model has none, a pad token): it gets a copy, and the bridge keeps the model's own one as
    ``hooklab_tokenizer`` (what :mod:`hooklab.inputs` reads BOS and EOS from)."""
    from transformer_lens.model_bridge import TransformerBridge

    given = None if tokenizer is None else copy.deepcopy(tokenizer)
    bridge = TransformerBridge.boot_transformers(
        source, device=device, dtype=dtype, tokenizer=given, hf_model=hf_model, **kwargs
    )
    if tokenizer is not None:
        bridge.hooklab_tokenizer = tokenizer
    return bridge


def _check_checkpoint_files(path: Path) -> None:
    """Raise ValueError naming the file if config.json or a safetensors file is unreadable."""
    import json

    from safetensors import SafetensorError, safe_open

    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{str(path / 'config.json')!r} is not valid JSON ({err}); the checkpoint is "
            "damaged. Save it again with model.save_pretrained(dir)."
        ) from None
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"{str(weights)!r} is not a readable safetensors file ({err}); it is truncated "
                "or damaged. Save the checkpoint again with model.save_pretrained(dir)."
            ) from None


def _load_local(path: Path, *, device, dtype, **kwargs):
    if not path.is_dir():
        raise FileNotFoundError(
            f"Local model path {str(path)!r} is not a directory. Pass a Hugging Face checkpoint "
            "directory (config.json, weights, tokenizer files), a hub name, or 'toy'."
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"Local model directory {str(path)!r} has no config.json; save the model with "
            "model.save_pretrained(dir) and tokenizer.save_pretrained(dir)."
        )
    _check_checkpoint_files(path)
    if kwargs.get("tokenizer") is None:
        kwargs["tokenizer"] = _local_tokenizer(path)
    return _boot(str(path), device=device, dtype=dtype, **kwargs)


def _local_tokenizer(path: Path):
    """The tokenizer saved in a checkpoint directory; ValueError when there is none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ValueError(
            f"The checkpoint directory {str(path)!r} has no usable tokenizer "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Save it "
            "there with tokenizer.save_pretrained(dir), or pass tokenizer= to hooklab.load."
        ) from None


def check_vocabulary(model, *, own: bool = True) -> None:
    """Raise ValueError if the tokenizer does not fit the model's embedding.

    Vocabulary-sized tables follow the embedding (``d_vocab`` rows, which may exceed
    ``config.vocab_size`` or the tokenizer: padding rows are fine). A tokenizer with more tokens
    than rows yields ids the model cannot embed: tokens added to the tokenizer but not to the
    model (fix: ``model.resize_token_embeddings(len(tokenizer))`` before saving), or another
    model's tokenizer. With ``own`` (the checkpoint's own tokenizer), one with less than half as
    many tokens is a stand-in too (checkpoints pad their embedding by a few rows, never by half).
    """
    from hooklab.inputs import own_tokenizer

    rows = int(model.cfg.d_vocab)
    tokenizer = own_tokenizer(model)
    size = len(tokenizer)
    base = int(getattr(tokenizer, "vocab_size", size))  # without added tokens
    if size > rows and base <= rows:
        beyond = [t for t, i in tokenizer.get_added_vocab().items() if i >= rows]
        raise ValueError(
            f"The tokenizer has {size} tokens but the model's embedding has {rows} rows: "
            f"{len(beyond)} added tokens ({', '.join(map(repr, beyond[:5]))}) have ids the model "
            "cannot embed. Resize the embedding after adding tokens, "
            "model.resize_token_embeddings(len(tokenizer)), and save the model again."
        )
    if size > rows or (own and size < rows // 2):
        raise ValueError(
            f"The tokenizer has {size} tokens but the model's embedding has {rows} rows: they do "
            "not belong together. Pass the model's own tokenizer with tokenizer=."
        )


def _hub_tokenizer(name: str, kwargs):
    """The checkpoint's own tokenizer (None where it cannot be read: the bridge loads its own)."""
    from transformers import AutoTokenizer

    options = {k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}
    try:
        return AutoTokenizer.from_pretrained(name, **options)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _load_hub(name: str, *, device, dtype, **kwargs):
    if kwargs.get("tokenizer") is None:
        kwargs["tokenizer"] = _hub_tokenizer(name, kwargs)
    try:
        return _boot(name, device=device, dtype=dtype, **kwargs)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
        reason = "offline mode is on (HF_HUB_OFFLINE)" if offline else str(err).splitlines()[0]
        raise OSError(
            f"Could not load model {name!r} from the Hugging Face Hub or the local cache "
            f"({reason}). If you are offline, pass a local directory that holds the checkpoint "
            "(config.json, weights and tokenizer files, e.g. saved with save_pretrained), or "
            "'toy' for hooklab's embedded model."
        ) from err


def _load_in_memory(hf_model, *, tokenizer, device, dtype, copy_model: bool, **kwargs):
    if tokenizer is None:
        raise ValueError(
            f"Loading an in-memory {type(hf_model).__name__} needs its tokenizer: "
            "hooklab.load(model, tokenizer=tokenizer). (Without it TransformerLens would try "
            "to fetch one from the hub.)"
        )
    # The bridge wraps and modifies the model it is given; work on a copy unless told not to.
    model = copy.deepcopy(hf_model) if copy_model else hf_model
    model = model.to(device=device, dtype=dtype).eval()
    name = getattr(model.config, "name_or_path", "") or type(model).__name__
    return _boot(name, device=device, dtype=dtype, tokenizer=tokenizer, hf_model=model, **kwargs)


def _check_placement(name_or_path, kwargs) -> None:
    """``device_map`` / ``n_devices`` checked before loading (:mod:`hooklab.placement`)."""
    from hooklab.placement import check_placement

    if isinstance(name_or_path, torch.nn.Module):
        if kwargs.get("device_map") is not None or kwargs.get("n_devices") is not None:
            raise ValueError(
                "device_map / n_devices place the modules of a checkpoint being loaded; an "
                "in-memory model is already placed. Move it yourself (model.to(...)) or pass "
                "its checkpoint directory."
            )
        return
    source = None
    if isinstance(name_or_path, (str, os.PathLike)):
        name = os.fspath(name_or_path)
        if name in (TOY_NAME, TOY_MT_NAME):
            from hooklab.toy import TOY_DIR
            from hooklab.toy_mt import TOY_MT_DIR

            source = str(TOY_DIR if name == TOY_NAME else TOY_MT_DIR)
        elif Path(name).expanduser().is_dir():
            source = str(Path(name).expanduser())
        elif not _looks_like_path(name):
            source = name  # a hub name: its config, if cached (else keys are not checked)
    check_placement(kwargs, source)


def load(
    name_or_path,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer=None,
    compatibility_mode: bool = False,
    copy_model: bool = True,
    **kwargs,
):
    """Load a causal language model as a TransformerLens ``TransformerBridge``.

    Args:
        name_or_path: ``"toy"`` (the small context LM shipped with hooklab; works offline),
            ``"toy-mt"`` (the small context-aware translation model, a Marian; offline too),
            ``"toy-rag"`` (the small retrieval model answering over documents; offline too),
            a local Hugging Face checkpoint directory, a hub name such as ``"gpt2"`` (needs the
            network or a cached copy), or an in-memory ``transformers`` model (then pass
            ``tokenizer``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
            Exclusive with ``device_map`` / ``n_devices``.
        dtype: ``torch.float32`` (default), ``"bf16"``, ``torch.float64``...
        tokenizer: the tokenizer of an in-memory model (required there), or a replacement.
        compatibility_mode: apply TransformerLens' HookedTransformer-style weight processing
            (folds layer norms and value biases). Off by default: hooklab's methods need raw
            weights, e.g. true value vectors at ``hook_v`` for value zeroing.
        copy_model: for an in-memory model, wrap a deep copy so the caller's model is untouched.
        **kwargs: passed to ``TransformerBridge.boot_transformers`` (``n_devices``,
            ``device_map``, ``revision``, ``hf_config_overrides``...). ``device_map`` is
            Hugging Face's (``"cpu"``, ``"auto"``, or module name -> device, placed by
            Accelerate); not for an in-memory model, whose placement is its own.

    Returns:
        The model as a ``TransformerBridge`` in eval mode.

    Example:
        >>> model = load("toy")
        >>> model.cfg.n_layers > 0
        True
    """
    dtype = resolve_dtype(dtype)
    split = {k: kwargs[k] for k in ("device_map", "n_devices") if kwargs.get(k) is not None}
    if split and device is not None:
        raise ValueError(
            f"device={device!r} and {', '.join(f'{k}={v!r}' for k, v in split.items())} were "
            "both given; they are exclusive. Pass device= for one device, or device_map= "
            '(e.g. "cpu", "auto", or {"transformer.h.0": 0, ...}) to place the modules.'
        )
    if not split:
        device = resolve_device(device)
    _check_placement(name_or_path, kwargs)
    if isinstance(name_or_path, torch.nn.Module):
        model = _load_in_memory(
            name_or_path,
            tokenizer=tokenizer,
            device=device,
            dtype=dtype,
            copy_model=copy_model,
            **kwargs,
        )
    elif isinstance(name_or_path, (str, os.PathLike)):
        name = os.fspath(name_or_path)
        if not name.strip():
            raise ValueError("Model name is empty; pass 'toy', a local directory or a hub name.")
        if name in (TOY_NAME, TOY_MT_NAME, TOY_RAG_NAME):
            from hooklab.toy import TOY_DIR
            from hooklab.toy_mt import TOY_MT_DIR
            from hooklab.toy_rag import TOY_RAG_DIR

            path = {TOY_NAME: TOY_DIR, TOY_MT_NAME: TOY_MT_DIR, TOY_RAG_NAME: TOY_RAG_DIR}[name]
            model = _load_local(path, device=device, dtype=dtype, tokenizer=tokenizer, **kwargs)
        elif Path(name).expanduser().exists():
            path = Path(name).expanduser()
            model = _load_local(path, device=device, dtype=dtype, tokenizer=tokenizer, **kwargs)
        elif isinstance(name_or_path, os.PathLike) or _looks_like_path(name):
            raise FileNotFoundError(
                f"Local model path {name!r} does not exist. Pass an existing checkpoint "
                "directory, a hub name such as 'gpt2', or 'toy'."
            )
        else:
            model = _load_hub(name, device=device, dtype=dtype, tokenizer=tokenizer, **kwargs)
    else:
        raise TypeError(
            f"load() takes a name, a path or a transformers model; got {type(name_or_path)!r}."
        )
    if compatibility_mode:
        model.enable_compatibility_mode(disable_warnings=True)
    check_vocabulary(model, own=tokenizer is None)
    if isinstance(name_or_path, (str, os.PathLike)):
        model.hooklab_name = os.fspath(name_or_path)  # recorded in every output (provenance)
    model.eval()
    return model
