"""PECoRe: context-sensitive token identification (CTI) and contextual cues imputation (CCI).

Sarti et al., ICLR 2024, "Quantifying the Plausibility of Context Reliance in Neural Machine
Translation". For a decoder-only model the input is ``input_template`` filled with the context
and the current text; the output (forced, or generated greedily) follows it.

* CTI: two teacher-forced passes over the same output tokens, with and without the context,
  give one contrastive score per output token (default KL(P_ctx || P_noctx)); tokens whose
  score stands out (:func:`hooklab.pecore.select.select`) are context-sensitive.
* CCI: for each context-sensitive token ŷ_t, ỹ*_t is the token the model predicts at t
  without the context (after the same forced output prefix). The attribution method explains
  P_ctx(ŷ_t) − P_ctx(ỹ*_t) (``attributed_fn="contrast_prob_diff"``); when ỹ*_t = ŷ_t, or the
  attributed function compares distributions (KL, P-CXMI...), the contrast is the contextless
  pass instead. Scores are sliced to the context tokens and cues selected with the same rule.
  All selected tokens are attributed in one batched call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from hooklab.attribute import attribute
from hooklab.forward import step_logits
from hooklab.generation import generate
from hooklab.inputs import (
    make_batch,
    pad_token_id,
    str_tokens,
)
from hooklab.output.provenance import describe_model
from hooklab.pecore.encode import Example, encode_example, generation_input
from hooklab.pecore.options import (
    RELATIVE_CONTEXT_SALIENCY,
    PecoreOptions,
)
from hooklab.pecore.result import ContextSensitiveToken, Cue, PecoreResult
from hooklab.pecore.select import select, selection_threshold
from hooklab.scoring import Contrast, make_step_args, run_step_function
from hooklab.steps import CONTRASTIVE

# attributed functions whose contrast is another token at the same step
_TOKEN_CONTRASTS = {
    "contrast_prob_diff",
    "contrast_logits_diff",
    "contrast_prob",
    "contrast_logits",
}


def _job(e: Example, steps: int) -> tuple[list[int], list[int], int]:
    """(prompt, targets, forced) to attribute output steps ``[0, steps)`` of ``e``: on
    encoder–decoder models the prompt is the source and the first ``forced`` targets are the
    decoder prefix (the output context), not attributed."""
    if e.source is None:
        return e.ctx_prompt, e.output_ids[:steps], 0
    prefix = e.ctx_prompt[1:]
    return e.source, prefix + e.output_ids[:steps], len(prefix)


def _context_columns(e: Example) -> tuple[list[int], list[int]]:
    """Columns of the input- and output-context tokens in a row of ``seq.scores(side=...)``."""
    offset = 0 if e.source is None else len(e.source)
    return e.context_positions, [offset + p for p in e.output_context_positions]


def _side(e: Example) -> str:
    return "target" if e.source is None else "both"


def _batch(model, prompts, targets, sources):
    return make_batch(
        prompts, targets, sources=sources, pad_id=pad_token_id(model), device=model.cfg.device
    )


def _relative_context_saliency(model, examples: list[Example]) -> list[torch.Tensor]:
    """Share of each step's saliency (L2 over the hidden size) on the context tokens."""
    groups: dict[int, list[int]] = {}
    jobs = [_job(e, len(e.output_ids)) for e in examples]
    for i, (_, _, forced) in enumerate(jobs):
        groups.setdefault(forced, []).append(i)
    scores: list = [None] * len(examples)
    for forced, members in groups.items():
        out = attribute(
            model, [jobs[i][0] for i in members], [jobs[i][1] for i in members],
            method="saliency", attr_pos_start=forced, batch_size=len(members),
        )  # fmt: skip
        for i, seq in zip(members, out, strict=True):
            s = seq.scores("l2", side=_side(examples[i])).nan_to_num()
            cols = [c for part in _context_columns(examples[i]) for c in part]
            scores[i] = s[:, cols].sum(-1) / s.sum(-1)
    return scores


def cti_scores(
    model, examples: list[Example], opts: PecoreOptions, *, one_pass: bool = True
) -> tuple[list[torch.Tensor], list[list[int]]]:
    """CTI score of every output token of each example, and ỹ* at every output step.

    ỹ* is the argmax without the context after the same forced output prefix; both come from
    the passes with and without the context over the same output tokens. With ``one_pass``
    (the default) the two are one batched forward, the contextless rows after the contextual
    ones; ``one_pass=False`` runs them as two (the same scores up to float rounding, which
    padding can change; tests compare both).
    """
    metric = opts.context_sensitivity_metric
    targets = [e.output_ids for e in examples]
    seq2seq = examples[0].source is not None
    ctx = ([e.ctx_prompt for e in examples], [e.source for e in examples] if seq2seq else None)
    noctx = (
        [e.noctx_prompt for e in examples],
        [e.noctx_source for e in examples] if seq2seq else None,
    )
    noctx_batch = _batch(model, noctx[0], targets, noctx[1])
    if metric == RELATIVE_CONTEXT_SALIENCY:
        scores = _relative_context_saliency(model, examples)
        with torch.no_grad():
            c_logits = step_logits(model, noctx_batch)
    else:
        batch = _batch(model, ctx[0], targets, ctx[1])
        contrast = Contrast(batch=noctx_batch)
        with torch.no_grad():
            if one_pass:  # [contextual rows; contextless rows]
                both = _batch(
                    model, ctx[0] + noctx[0], targets + targets,
                    None if ctx[1] is None else ctx[1] + noctx[1],
                )  # fmt: skip
                logits = step_logits(model, both)
                logits, c_logits = logits[: len(examples)], logits[len(examples) :]
            else:
                logits, c_logits = step_logits(model, batch), step_logits(model, noctx_batch)
            args = make_step_args(model, batch, logits, contrast, c_logits)
            batched = run_step_function(metric, args)
        scores = [batched[i, : len(t)].float().cpu() for i, t in enumerate(targets)]
    best = c_logits.argmax(-1)
    alternatives = [best[i, : len(t)].tolist() for i, t in enumerate(targets)]
    return scores, alternatives


def _candidates(model, ids: list[int], keep: tuple[str, ...]) -> torch.Tensor:
    """Output steps that CTI may select: not special tokens, unless kept."""
    tokenizer = model.tokenizer
    special = set(getattr(tokenizer, "all_special_ids", []))
    keep_ids = {tokenizer.convert_tokens_to_ids(t) for t in keep}
    valid = list(getattr(tokenizer, "all_special_tokens", []))
    unknown = [t for t in keep if t not in valid]
    if unknown:
        raise ValueError(
            f"special_tokens_to_keep has {unknown!r}, which are not special tokens of this "
            f"tokenizer; valid ones: {valid!r}."
        )
    return torch.tensor([i not in special or i in keep_ids for i in ids], dtype=torch.bool)


def cci(
    model, jobs: list[tuple[Example, int, int]], opts: PecoreOptions
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Attribute each (example, step t, ỹ*_t) to its context tokens; one call per contrast kind.

    Returns per job the scores of the input-context and of the output-context tokens.
    """
    if not jobs:
        return []
    fn = opts.attributed_fn
    groups: dict[str, list[int]] = {"token": [], "prompt": []}
    for k, (e, t, alt) in enumerate(jobs):
        by_token = fn in _TOKEN_CONTRASTS and alt != e.output_ids[t]
        groups["token" if by_token else "prompt"].append(k)
    results: list = [None] * len(jobs)
    for kind, members in groups.items():
        if not members:
            continue
        sel = [jobs[k] for k in members]
        inputs = [_job(e, t + 1) for e, t, _ in sel]
        kwargs = dict(opts.attribution_kwargs)
        if kind == "token":
            kwargs["contrast_targets"] = [
                [*tg[:-1], alt] for (_, tg, _), (_, _, alt) in zip(inputs, sel, strict=True)
            ]
        elif fn in CONTRASTIVE:  # the contextless input, followed by the same current output
            kwargs["contrast_prompts"] = [
                e.noctx_prompt if e.source is None else e.noctx_source for e, _, _ in sel
            ]
            kwargs["contrast_forced"] = [
                (e.noctx_prompt[1:] if e.source is not None else []) + e.output_ids[:t]
                for e, t, _ in sel
            ]
        out = attribute(
            model,
            [p for p, _, _ in inputs],
            [tg for _, tg, _ in inputs],
            method=opts.attribution_method,
            attributed_fn=fn,
            attr_pos_start=-1,
            batch_size=len(sel),
            **kwargs,
        )
        for k, (e, _, _), seq in zip(members, sel, out, strict=True):
            row = seq.scores(side=_side(e))[0]  # the method's own reduction of trailing dims
            inputs_cols, output_cols = _context_columns(e)
            results[k] = (row[inputs_cols], row[output_cols])
    return results


def pecore(
    model,
    input_context_text: str,
    input_current_text: str,
    *,
    output_context_text: str | None = None,
    output_current_text: str | None = None,
    options: PecoreOptions | None = None,
    **option_overrides,
) -> PecoreResult:
    """Run CTI and CCI on one example; :func:`pecore_batch` runs several at once.

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`.
        input_context_text: the context (filled into ``{context}`` of ``input_template``).
        input_current_text: the current input (``{current}``).
        output_context_text: an output context forced before the current output.
        output_current_text: the current output to explain; generated greedily when None.
        options: a :class:`PecoreOptions`; ``**option_overrides`` change single fields.

    Example:
        >>> import hooklab
        >>> from hooklab.pecore import pecore
        >>> model = hooklab.load("toy")
        >>> res = pecore(model, "George was sick yesterday.", "His colleagues asked him to come")
        >>> [c.token for c in res.context_sensitive]
        [' hospital']
    """
    example = {
        "input_context_text": input_context_text,
        "input_current_text": input_current_text,
        "output_context_text": output_context_text,
        "output_current_text": output_current_text,
    }
    return pecore_batch(model, [example], options, **option_overrides)[0]


def _generate_missing(model, examples: list[dict], options: PecoreOptions) -> list[list | None]:
    """Greedy outputs (one batched call) for the examples without ``output_current_text``."""
    todo = [i for i, ex in enumerate(examples) if ex.get("output_current_text") is None]
    generated: list[list | None] = [None] * len(examples)
    if todo:
        inputs = [generation_input(model, options, **examples[i]) for i in todo]
        kwargs = dict(options.generation_kwargs)
        if inputs[0][1] is not None:  # encoder–decoder: the output context is forced first
            kwargs["decoder_prefixes"] = [prefix for _, prefix in inputs]
        outputs = generate(model, [p for p, _ in inputs], **kwargs).output_ids
        for i, ids in zip(todo, outputs, strict=True):
            generated[i] = ids
    return generated


def _select_tokens(
    model, example: Example, scores: torch.Tensor, options: PecoreOptions
) -> tuple[list[int], float | None]:
    """CTI: the context-sensitive output steps of one example, and the threshold used."""
    cand = _candidates(model, example.output_ids, options.special_tokens_to_keep)
    threshold = selection_threshold(scores[cand], options.context_sensitivity_std_threshold)
    chosen = select(
        scores,
        std_threshold=options.context_sensitivity_std_threshold,
        topk=options.context_sensitivity_topk,
        candidates=cand,
    )
    return chosen, threshold


def _context_tokens(model, example: Example, side: str = "input") -> tuple[str, ...]:
    """The input (or output) context tokens as text: the tokens CCI scores."""
    if side == "output":
        ids = [example.ctx_prompt[p] for p in example.output_context_positions]
    else:  # the input context is in the prompt, or in the source of an encoder–decoder model
        ids = example.ctx_prompt if example.source is None else example.source
        ids = [ids[p] for p in example.context_positions]
    return tuple(str_tokens(model, ids))


def _sensitive_token(
    model, example: Example, t: int, score: float, alternative: int, cue_scores, options
) -> ContextSensitiveToken:
    """One selected output token with its CCI scores and its cues.

    Cues are selected with the same rule over the input- and output-context scores together.
    """
    tokens = {side: _context_tokens(model, example, side) for side in ("input", "output")}
    scores = {side: c.double() for side, c in zip(("input", "output"), cue_scores, strict=True)}
    both = torch.cat([scores["input"], scores["output"]])
    chosen = select(
        both, std_threshold=options.attribution_std_threshold, topk=options.attribution_topk
    )
    n_in = len(tokens["input"])
    cues = tuple(
        Cue(j, tokens["input"][j], float(both[j]), "input")
        if j < n_in
        else Cue(j - n_in, tokens["output"][j - n_in], float(both[j]), "output")
        for j in chosen
    )
    return ContextSensitiveToken(
        index=t,
        token=str_tokens(model, [example.output_ids[t]])[0],
        score=score,
        contextless_token=str_tokens(model, [alternative])[0],
        input_context_tokens=tokens["input"],
        input_context_scores=tuple(scores["input"].tolist()),
        cues=cues,
        output_context_tokens=tokens["output"],
        output_context_scores=tuple(scores["output"].tolist()),
    )


def pecore_batch(
    model,
    examples: Sequence[Mapping[str, str | None]],
    options: PecoreOptions | None = None,
    **option_overrides,
) -> list[PecoreResult]:
    """Run PECoRe on several examples, batched: one :class:`PecoreResult` per example.

    Steps: generate the missing outputs (one batched call) → encode → CTI scores and the
    contextless alternatives (two batched passes) → select context-sensitive tokens → CCI for
    all of them (one batched attribution per contrast kind) → results.

    Args:
        model: a ``TransformerBridge`` from :func:`hooklab.load`.
        examples: dicts with ``input_context_text``, ``input_current_text`` and optionally
            ``output_context_text`` and ``output_current_text`` (the arguments of :func:`pecore`).
        options: a :class:`PecoreOptions`; ``**option_overrides`` change single fields.
    """
    options = PecoreOptions() if options is None else options
    if not isinstance(options, PecoreOptions):
        raise TypeError(
            f"options must be a PecoreOptions, got {type(options).__name__}: {options!r:.80}; "
            "pass PecoreOptions(...) or single options as keyword arguments."
        )
    if option_overrides:  # a PecoreOptions is checked when made: only changes make a new one
        options = options.replace(**option_overrides)
    examples = [dict(ex) for ex in examples]
    if not examples:
        raise ValueError("No examples given: pass a list of example dicts.")
    generated = _generate_missing(model, examples, options)
    encoded = [
        encode_example(model, options, **ex, generated=gen)
        for ex, gen in zip(examples, generated, strict=True)
    ]
    scores, alternatives = cti_scores(model, encoded, options)
    selections = [
        _select_tokens(model, e, s, options) for e, s in zip(encoded, scores, strict=True)
    ]
    jobs = [
        (i, t) for i, (chosen, _) in enumerate(selections) for t in chosen
    ]  # (example, step) of every selected token, in order
    cue_scores = cci(model, [(encoded[i], t, alternatives[i][t]) for i, t in jobs], options)
    sensitive: list[list[ContextSensitiveToken]] = [[] for _ in encoded]
    for (i, t), c in zip(jobs, cue_scores, strict=True):
        entry = _sensitive_token(
            model, encoded[i], t, float(scores[i][t]), alternatives[i][t], c, options
        )
        sensitive[i].append(entry)
    model_info = describe_model(model)
    parameters = options.resolved()
    return [
        PecoreResult(
            input_context=e.input_context,
            input_current=e.input_current,
            output_current=e.output_current,
            input_context_tokens=_context_tokens(model, e),
            output_context_tokens=_context_tokens(model, e, "output"),
            output_current_tokens=tuple(str_tokens(model, e.output_ids)),
            cti_metric=options.context_sensitivity_metric,
            cti_scores=tuple(float(x) for x in s),
            cti_threshold=threshold,
            context_sensitive=tuple(entries),
            output_context=e.output_context,
            cci_method=options.attribution_method,
            cci_attributed_fn=options.attributed_fn,
            parameters=parameters,
            model=model_info,
        )
        for e, s, (_, threshold), entries in zip(
            encoded, scores, selections, sensitive, strict=True
        )
    ]
