"""Formatting and tokenising PECoRe examples (decoder-only models).

The contextual input is ``input_template`` filled with the input context and current text,
then the separator and any output context (``output_template`` up to ``{current}``); the
contextless input is ``contextless_input_current_text`` filled with the current text. Both are
followed by the same current output tokens (forced, or generated greedily after the contextual
input). The positions of the input-context and output-context tokens in the contextual input
are what CCI attributes to.
"""

from __future__ import annotations

from dataclasses import dataclass

from hooklab.generation import generate
from hooklab.inputs import check_length, encode_prompt, encode_target
from hooklab.pecore.options import PecoreOptions, check_texts, fill


@dataclass(frozen=True)
class Example:
    """One PECoRe example, encoded."""

    input_context: str
    input_current: str
    output_context: str | None
    output_current: str
    ctx_prompt: list[int]  # BOS + contextual input (+ output context): the forced prefix
    noctx_prompt: list[int]  # BOS + contextless input (+ its output prefix)
    output_ids: list[int]  # current output tokens: the CTI candidates
    context_positions: list[int]  # positions of input context tokens in ctx_prompt
    output_context_positions: list[int]  # positions of output context tokens in ctx_prompt


def _span_positions(model, text: str, span: tuple[int, int] | None, offset: int) -> list[int]:
    """Positions of the tokens of ``text`` that overlap the character ``span``, + ``offset``."""
    if span is None or span[0] == span[1]:
        return []
    enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [
        offset + k
        for k, (a, b) in enumerate(enc["offset_mapping"])
        if a < span[1] and b > span[0] and b > a
    ]


def _output_prefix(template: str, context: str | None) -> tuple[str, str, tuple[int, int] | None]:
    """Split an output template into (text before the current output, joiner, context span)."""
    head = template.split("{current}")[0]
    if "{context}" not in head:
        return head, "", None
    before, after = head.split("{context}", 1)
    context = context or ""
    return before + context, after, (len(before), len(before) + len(context))


def encode_example(
    model,
    opts: PecoreOptions,
    *,
    input_context_text: str,
    input_current_text: str,
    output_context_text: str | None = None,
    output_current_text: str | None = None,
    generated: list[int] | None = None,
) -> Example:
    """Format, tokenise and (if needed) generate the output of one example.

    Args:
        generated: output ids already generated from :func:`contextual_prompt` (used when
            ``output_current_text`` is None; generated here if not given).
    """
    check_texts(opts.input_template, input_context_text, input_current_text, "input")
    ctx_text, span = fill(
        opts.input_template, context=input_context_text, current=input_current_text
    )
    noctx_text, _ = fill(
        opts.contextless_input_current_text, context=None, current=input_current_text
    )
    sep = opts.decoder_input_output_separator
    out_template = opts.output_template or (
        "{context} {current}" if output_context_text else "{current}"
    )
    if output_context_text:
        check_texts(out_template, output_context_text, "x", "output")
    head, joiner, out_span = _output_prefix(out_template, output_context_text)
    ctx_prompt = encode_prompt(model, ctx_text)
    input_ids = model.tokenizer(ctx_text, add_special_tokens=False)["input_ids"]
    context_positions = _span_positions(model, ctx_text, span, len(ctx_prompt) - len(input_ids))
    output_context_positions = []
    if head + joiner:
        if out_span is not None:
            out_span = (out_span[0] + len(sep), out_span[1] + len(sep))
            output_context_positions = _span_positions(model, sep + head, out_span, len(ctx_prompt))
        ctx_prompt += encode_target(model, sep + head)
    noctx_prompt = encode_prompt(model, noctx_text)
    lead = joiner if head or joiner else sep  # text between the prefix and the current output
    if output_current_text is None:
        if generated is None:
            generated = generate(model, [ctx_prompt], **dict(opts.generation_kwargs)).output_ids[0]
        output_ids = list(generated)
        if not output_ids:
            raise ValueError(f"The model generated no output for {ctx_text!r}.")
        output_current_text = model.tokenizer.decode(output_ids)
        if lead and output_current_text.startswith(lead):
            output_current_text = output_current_text[len(lead) :]
    else:
        check_texts("{current}", None, output_current_text, "output")
        output_ids = encode_target(model, lead + output_current_text)
    nc_head = opts.contextless_output_current_text.split("{current}")[0]
    if nc_head:
        noctx_prompt += encode_target(model, sep + nc_head)
    check_length(model, len(ctx_prompt) + len(output_ids), "input + output")
    check_length(model, len(noctx_prompt) + len(output_ids), "contextless input + output")
    return Example(
        input_context_text,
        input_current_text,
        output_context_text,
        output_current_text,
        ctx_prompt,
        noctx_prompt,
        output_ids,
        context_positions,
        output_context_positions,
    )


def contextual_prompt(model, opts: PecoreOptions, **texts) -> list[int]:
    """The forced prefix the output follows (input with context, plus any output context)."""
    return encode_example(model, opts, **{**texts, "output_current_text": "x"}).ctx_prompt
