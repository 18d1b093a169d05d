"""The contract every registered attribution method keeps, as one public check.

:func:`check_method` runs a method through :func:`hooklab.attribute` and checks what every
method must do, so a method you register gets the same tests as the built-in ones:

- shapes: ``[step, pos, ...]`` per sequence, step scores ``[step]``;
- NaN exactly where a step cannot see (positions ``>= target_start + t``), nowhere else;
- resolved parameters: every option of the method, defaults included, in each output, frozen
  and not shared between outputs; the model description filled in;
- batch == one by one: prompts of different lengths together give what each gives alone;
- hooks removed and weights unchanged, after a normal run and after an exception raised inside
  a hook during the method's forward pass;
- save -> load round trip exact.

Example:
    >>> import hooklab
    >>> from hooklab.testing import check_method
    >>> out = check_method(hooklab.load("toy"), "attention")  # raises AssertionError if broken
    >>> len(out)
    2
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hooklab.architecture import is_encoder_decoder
from hooklab.attribute import attribute
from hooklab.attribution import AttributionOutput, SequenceAttribution
from hooklab.hooks import count_hooks, hook_name, temporary_hooks
from hooklab.methods import METHODS
from hooklab.output.provenance import thaw
from hooklab.seq2seq import embedding_modules, last_block_hook

PROMPTS = ("George was sick yesterday. His colleagues", "It rained")
TARGETS = (" asked him to come", " all morning.")


class HookFired(RuntimeError):
    """Raised by the hook :func:`check_method` attaches to test cleanup after an exception."""


def _fail(name: str, what: str) -> AssertionError:
    return AssertionError(f"Method {name!r} breaks the method contract: {what}")


def _run(model, name: str, prompts, targets, options: Mapping[str, Any]) -> AttributionOutput:
    try:
        return attribute(
            model, list(prompts), list(targets), method=name, batch_size=len(prompts),
            step_scores=["probability"], **options,
        )  # fmt: skip
    except Exception as exc:
        raise _fail(name, f"attribute() raised {type(exc).__name__}: {exc}") from exc


def check_sequence(name: str, seq: SequenceAttribution, defaults: Mapping[str, Any]) -> None:
    """Check one output sequence's shapes, NaN pattern and recorded parameters."""
    n_pos, steps = len(seq.tokens), seq.n_steps
    missing = [k for k in ("method", *defaults) if k not in seq.parameters]
    if missing:
        raise _fail(name, f"parameters lack {missing} (every option, defaults included).")
    if seq.parameters["method"] != name:
        raise _fail(name, f"parameters record method {seq.parameters['method']!r}.")
    if seq.attributions is None:
        return
    attr = seq.attributions
    if tuple(attr.shape[:2]) != (steps, n_pos):
        raise _fail(name, f"attributions {tuple(attr.shape)}, expected ({steps}, {n_pos}, ...).")
    cols = torch.arange(n_pos)[None, :]
    hidden = cols >= seq.target_start + torch.arange(steps)[:, None]  # [step, pos]
    nan = attr.isnan().reshape(steps, n_pos, -1)
    if not nan[hidden].all():
        raise _fail(name, "a position a step cannot see (>= target_start + t) is not NaN.")
    if nan[~hidden].any():
        where = (nan.any(-1) & ~hidden).nonzero().tolist()
        raise _fail(name, f"NaN at visible (step, pos) {where[:5]}; only unseen ones may be NaN.")


def check_batch_equals_alone(
    model, name: str, out: AttributionOutput, prompts, targets, options, atol, rtol
) -> None:
    """Each prompt alone gives the attributions and step scores it gets in the batch."""
    for i, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
        alone = _run(model, name, [prompt], [target], options)[0]
        both = out[i]
        pairs = [("attributions", alone.attributions, both.attributions)]
        pairs += [(f"extra {k!r}", alone.extras[k], both.extras[k]) for k in both.extras]
        for what, a, b in pairs:
            if (a is None) != (b is None):
                raise _fail(name, f"{what} of prompt {i} is None in one run only.")
            if a is None:
                continue
            try:
                torch.testing.assert_close(a, b, atol=atol, rtol=rtol, equal_nan=True)
            except AssertionError as exc:
                raise _fail(name, f"{what} of prompt {i}: batched != alone. {exc}") from None


def check_cleanup_after_exception(model, name: str, prompts, targets, options) -> None:
    """Raise inside a hook during the forward pass; the method's hooks must all be removed."""
    fired: list[int] = []

    def explode(activation, hook):
        fired.append(count_hooks(model))  # the method's own hooks are attached now
        raise HookFired("raised inside a hook by hooklab.testing")

    before = count_hooks(model)
    if is_encoder_decoder(model):
        last = last_block_hook(model)
    else:
        last = hook_name("resid_post", model.cfg.n_layers - 1)
    try:
        with temporary_hooks(model, [(last, explode)]):
            attribute(
                model, list(prompts), list(targets), method=name, step_scores=["probability"],
                **options,
            )  # fmt: skip
    except HookFired:
        pass
    except Exception as exc:
        raise _fail(name, f"the hook's exception came back as {type(exc).__name__}: {exc}") from exc
    if not fired:
        raise _fail(name, "no forward pass ran through the model's hook points.")
    if count_hooks(model) != before:
        raise _fail(name, f"{count_hooks(model) - before} hooks left after an exception.")
    if is_encoder_decoder(model) and any(m._forward_hooks for m in embedding_modules(model)):
        raise _fail(name, "an embedding replacement hook was left after an exception.")


def check_round_trip(name: str, out: AttributionOutput) -> None:
    """Save -> load gives back the same sequences and parameters."""
    with tempfile.TemporaryDirectory() as tmp:
        loaded = AttributionOutput.load(out.save(Path(tmp) / "out.safetensors"))
    if thaw(loaded.model) != thaw(out.model) or thaw(loaded.info) != thaw(out.info):
        raise _fail(name, "the model description or info changed in a save -> load round trip.")
    for i, (a, b) in enumerate(zip(out, loaded, strict=True)):
        same = (a.tokens, a.target_start, a.method) == (b.tokens, b.target_start, b.method)
        same &= thaw(a.parameters) == thaw(b.parameters) and _equal(a.token_ids, b.token_ids)
        same &= _equal(a.attributions, b.attributions)
        same &= set(a.step_scores) == set(b.step_scores) and set(a.extras) == set(b.extras)
        same &= all(_equal(v, b.step_scores[k]) for k, v in a.step_scores.items())
        same &= all(_equal(v, b.extras[k]) for k, v in a.extras.items())
        if not same:
            raise _fail(name, f"sequence {i} changed in a save -> load round trip.")


def _equal(x, y) -> bool:
    """Exactly equal tensors (NaN where the other is NaN), or both None."""
    if x is None or y is None:
        return x is None and y is None
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    return torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(), y.nan_to_num())


def check_method(
    model,
    name: str,
    *,
    prompts: Sequence[str] = PROMPTS,
    targets: Sequence[str] = TARGETS,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    **options: Any,
) -> AttributionOutput:
    """Check that method ``name`` keeps the contract of every registered method.

    Args:
        model: a ``TransformerBridge`` (a tiny one is enough).
        name: the registered method (:func:`hooklab.list_methods`).
        prompts: two or more prompts of different lengths, batched together.
        targets: a forced continuation per prompt.
        atol, rtol: tolerance of batch == one by one.
        **options: options of the method.

    Returns:
        The batched output, for further checks.

    Raises:
        AssertionError: naming the method and the broken rule.
    """
    spec = METHODS.get(name)
    if len(prompts) < 2 or len(targets) != len(prompts):
        raise ValueError(
            f"Pass two or more prompts and one target each; got {len(prompts)} and {len(targets)}."
        )
    hooks = count_hooks(model)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    training = model.training
    out = _run(model, name, prompts, targets, options)
    if count_hooks(model) != hooks:
        raise _fail(name, f"{count_hooks(model) - hooks} hooks left attached after it returned.")
    if len(out) != len(prompts) or out.model is None:
        raise _fail(name, f"{len(out)} sequences for {len(prompts)} prompts, model {out.model}.")
    for seq in out:
        check_sequence(name, seq, spec.defaults)
    if out[0].parameters is out[1].parameters:
        raise _fail(name, "outputs share one parameters mapping.")
    check_batch_equals_alone(model, name, out, prompts, targets, options, atol, rtol)
    check_cleanup_after_exception(model, name, prompts, targets, options)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])]
    if changed or model.training != training:
        raise _fail(name, f"the model changed: weights {changed[:3]}, training={model.training}.")
    check_round_trip(name, out)
    return out
