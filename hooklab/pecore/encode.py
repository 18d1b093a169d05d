"""Formatting and tokenising PECoRe examples.

Decoder-only models: the contextual input is ``input_template`` filled with the input context
and current text, then the separator and any output context (``output_template`` up to
``{current}``); the contextless input is ``contextless_input_current_text`` filled with the
current text. Both are followed by the same current output tokens (forced, or generated
greedily after the contextual input).

Encoder–decoder models (as Inseq): the filled ``input_template`` is the source (the tokenizer's
special tokens included) and the output context is forced on the decoder side, after the
decoder start token; the contextless pair is the filled ``contextless_input_current_text`` as
source and ``contextless_output_current_text``'s prefix on the decoder side. No separator goes
between source and output.

The positions of the input-context tokens (in the prompt, or the source) and of the
output-context tokens (in the prompt, or the decoder input) are what CCI attributes to.
"""

from __future__ import annotations

from dataclasses import dataclass

from hooklab import seq2seq
from hooklab.architecture import is_encoder_decoder
from hooklab.generation import generate
from hooklab.inputs import (
    check_length,
    encode_prompt,
    encode_target,
    own_tokenizer,
    refuse_prepend_bos,
)
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
    context_positions: list[int]  # positions of input context tokens in ctx_prompt (source)
    output_context_positions: list[int]  # positions of output context tokens in ctx_prompt
    source: list[int] | None = None  # encoder–decoder: the contextual source
    noctx_source: list[int] | None = None  # encoder–decoder: the contextless source
    # encoder–decoder: ctx_prompt / noctx_prompt are the decoder inputs (start token first)

    @property
    def generation_input(self) -> tuple[list[int], list[int] | None]:
        """What greedy generation continues: (prompt, None) or (source, decoder prefix)."""
        if self.source is None:
            return self.ctx_prompt, None
        return self.source, self.ctx_prompt[1:]


def _span_positions(
    model, text: str, span: tuple[int, int] | None, offset: int, special: bool = False
) -> list[int]:
    """Positions of the tokens of ``text`` that overlap the character ``span``, + ``offset``.

    With ``special``, ``text`` is tokenised with the tokenizer's special tokens (a source).
    """
    if span is None or span[0] == span[1]:
        return []
    enc = own_tokenizer(model)(text, add_special_tokens=special, return_offsets_mapping=True)
    return [
        offset + k
        for k, (a, b) in enumerate(enc["offset_mapping"])
        if a < span[1] and b > span[0] and b > a
    ]


def _output_prefix(template: str, context: str | None) -> tuple[str, str, tuple[int, int] | None]:
    """Split an output template into (text before the current output, lead, context span).

    The lead is the whitespace right before ``{current}``: it is tokenised with the current
    output (a word-initial token carries its space); any other joiner, such as ``" <brk> "``'s
    ``" <brk>"``, belongs to the forced prefix, never to the CTI candidates.
    """
    head = template.split("{current}")[0]
    lead = head[len(head.rstrip()) :]
    head = head[: len(head) - len(lead)]
    if "{context}" not in head:
        return head, lead, None
    before, after = head.split("{context}", 1)
    context = context or ""
    return before + context + after, lead, (len(before), len(before) + len(context))


def _format(
    opts: PecoreOptions, input_context: str, input_current: str, output_context: str | None
) -> tuple[str, tuple[int, int] | None, str, str, str, tuple[int, int] | None]:
    """Fill the templates (texts checked): contextual input and its context span, contextless
    input, and the output prefix, lead and output-context span (see :func:`_output_prefix`)."""
    check_texts(opts.input_template, input_context, input_current, "input")
    ctx_text, span = fill(opts.input_template, context=input_context, current=input_current)
    noctx_text, _ = fill(opts.contextless_input_current_text, context=None, current=input_current)
    out_template = opts.output_template or (
        "{context} {current}" if output_context else "{current}"
    )
    if output_context:
        check_texts(out_template, output_context, "x", "output")
    head, lead, out_span = _output_prefix(out_template, output_context)
    return ctx_text, span, noctx_text, head, lead, out_span


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
        generated: output ids already generated from :func:`generation_input` (used when
            ``output_current_text`` is None; generated here if not given).
    """
    if is_encoder_decoder(model):
        return _encode_seq2seq(
            model, opts, input_context_text=input_context_text,
            input_current_text=input_current_text, output_context_text=output_context_text,
            output_current_text=output_current_text, generated=generated,
        )  # fmt: skip
    ctx_text, span, noctx_text, head, lead, out_span = _format(
        opts, input_context_text, input_current_text, output_context_text
    )
    sep = opts.decoder_input_output_separator
    ctx_prompt = encode_prompt(model, ctx_text, prepend_bos=opts.prepend_bos)
    input_ids = model.tokenizer(ctx_text, add_special_tokens=False)["input_ids"]
    context_positions = _span_positions(model, ctx_text, span, len(ctx_prompt) - len(input_ids))
    output_context_positions = []
    if head:
        if out_span is not None:
            out_span = (out_span[0] + len(sep), out_span[1] + len(sep))
            output_context_positions = _span_positions(model, sep + head, out_span, len(ctx_prompt))
        ctx_prompt += encode_target(model, sep + head)
    noctx_prompt = encode_prompt(model, noctx_text, prepend_bos=opts.prepend_bos)
    lead = lead if head else sep  # text between the prefix and the current output
    output_ids, output_current_text = _output_ids(
        model, opts, output_current_text, lead, generated, (ctx_prompt, None), ctx_text
    )
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


def generation_input(model, opts: PecoreOptions, **texts) -> tuple[list[int], list[int] | None]:
    """What the output is generated from: (prompt, None) or (source, decoder prefix)."""
    return encode_example(model, opts, **{**texts, "output_current_text": "x"}).generation_input


def _output_ids(model, opts, text: str | None, lead: str, generated, gen_input, what: str):
    """The current output ids (forced ``text``, or generated) and the output text."""
    if text is not None:
        check_texts("{current}", None, text, "output")
        return encode_target(model, lead + text), text
    if generated is None:
        prompt, prefix = gen_input
        kwargs = dict(opts.generation_kwargs)
        if prefix is not None:
            kwargs["decoder_prefixes"] = [prefix]
        generated = generate(model, [prompt], **kwargs).output_ids[0]
    if not generated:
        raise ValueError(f"The model generated no output for {what!r}.")
    text = model.tokenizer.decode(list(generated))
    return list(generated), text[len(lead) :] if lead and text.startswith(lead) else text


def _encode_seq2seq(
    model,
    opts: PecoreOptions,
    *,
    input_context_text: str,
    input_current_text: str,
    output_context_text: str | None,
    output_current_text: str | None,
    generated: list[int] | None,
) -> Example:
    """:func:`encode_example` for encoder–decoder models (see the module docstring)."""
    refuse_prepend_bos(opts.prepend_bos)
    ctx_text, span, noctx_text, head, lead, out_span = _format(
        opts, input_context_text, input_current_text, output_context_text
    )
    start = seq2seq.decoder_start_id(model)
    source, noctx_source = (
        seq2seq.encode_source(model, ctx_text),
        seq2seq.encode_source(model, noctx_text),
    )
    ctx_prompt = [start, *(encode_target(model, head) if head else [])]
    nc_head = opts.contextless_output_current_text.split("{current}")[0]
    noctx_prompt = [start, *(encode_target(model, nc_head) if nc_head else [])]
    output_ids, output_current_text = _output_ids(
        model, opts, output_current_text, lead if head else "", generated,
        (source, ctx_prompt[1:]), ctx_text,
    )  # fmt: skip
    for what, ids in (("source", source), ("contextless source", noctx_source)):
        check_length(model, len(ids), what)
    check_length(model, len(ctx_prompt) + len(output_ids), "decoder input + output")
    check_length(model, len(noctx_prompt) + len(output_ids), "contextless decoder input + output")
    return Example(
        input_context_text,
        input_current_text,
        output_context_text,
        output_current_text,
        ctx_prompt,
        noctx_prompt,
        output_ids,
        _span_positions(model, ctx_text, span, 0, special=True),
        _span_positions(model, head, out_span, 1) if head else [],
        source,
        noctx_source,
    )
