"""Tidy (long-format) pandas tables of every output: one row per observation.

pandas is imported only when a table is asked for. Every ``to_pandas()`` of the outputs calls
one of these functions; their docstrings list the columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd

    from hooklab.mixing.knockout_output import KnockoutOutput
    from hooklab.mixing.output import MixingOutput
    from hooklab.output.sequence import AttributionOutput, SequenceAttribution
    from hooklab.pecore.result import PecoreResult


def sequence_frame(seq: SequenceAttribution, reduce: str | None = None) -> pd.DataFrame:
    """One row per (step, visible source position) of one attributed sequence.

    Columns: ``step``; ``target_pos`` and ``target_token`` (the token step ``step`` predicts);
    ``pos`` and ``token`` (the source token); ``score`` (``seq.scores(reduce)[step, pos]``,
    trailing dims reduced with ``reduce``, not normalised); then one column per step score and
    extra (repeated on every row of the step). Positions a step cannot see (NaN) are left
    out. Without attributions: one row per step, ``pos`` and ``token`` missing, ``score`` NaN.

    Encoder–decoder outputs have a column ``side`` after ``score``: ``"source"`` rows (``pos``
    and ``token`` index the source tokens) come first, then ``"target"`` rows (the decoder
    input).
    """
    import pandas as pd

    sides = [("target", seq.tokens, seq.scores(reduce))]
    if seq.encoder_decoder and seq.attributions is not None:
        sides.insert(0, ("source", seq.source_tokens, seq.scores(reduce, side="source")))
    cells = []  # (side, step, pos, score, token)
    for side, tokens, scores in sides:
        if scores is None:
            cells += [(side, t, None, float("nan"), None) for t in range(seq.n_steps)]
            break
        grid = scores.detach().to("cpu", torch.float64)
        cells += [
            (side, t, k, grid[t, k].item(), tokens[k])
            for t, k in (~grid.isnan()).nonzero().tolist()
        ]
    start = seq.target_start
    frame = pd.DataFrame(
        {
            "step": [c[1] for c in cells],
            "target_pos": [start + c[1] for c in cells],
            "target_token": [seq.tokens[start + c[1]] for c in cells],
            "pos": pd.array([c[2] for c in cells], dtype="Int64"),
            "token": [c[4] for c in cells],
            "score": [c[3] for c in cells],
        }
    )
    if seq.encoder_decoder:
        frame["side"] = [c[0] for c in cells]
    for name, values in {**seq.step_scores, **seq.extras}.items():
        per_step = values.detach().to("cpu", torch.float64).tolist()
        frame[name] = [per_step[c[1]] for c in cells]
    return frame


def attribution_frame(out: AttributionOutput, reduce: str | None = None) -> pd.DataFrame:
    """:func:`sequence_frame` of every sequence, with a first column ``example`` (its index)."""
    import pandas as pd

    frames = [sequence_frame(s, reduce).assign(example=i) for i, s in enumerate(out)]
    if not frames:
        return pd.DataFrame(columns=["example", "step", "pos", "score"])
    frame = pd.concat(frames, ignore_index=True)
    return frame[["example", *(c for c in frame.columns if c != "example")]]


def mixing_frame(out: MixingOutput) -> pd.DataFrame:
    """One row per (layer, query, visible key) of a mixing output.

    Columns: ``layer`` (the model layer), ``query_pos``, ``query_token``, ``key_pos``,
    ``key_token``, ``score`` (``scores[layers.index(layer), query_pos, key_pos]``) and, when the
    output has it, ``rollout``. Keys a query cannot see (after it, under a causal mask) are left
    out.
    """
    import pandas as pd

    pairs = out.visible().nonzero().tolist()  # [(query, key)]
    n = len(pairs)
    scores = out.scores.detach().to("cpu", torch.float64)
    q = torch.tensor([i for i, _ in pairs], dtype=torch.long)
    k = torch.tensor([j for _, j in pairs], dtype=torch.long)
    frame = pd.DataFrame(
        {
            "layer": [layer for layer in out.layers for _ in range(n)],
            "query_pos": q.tolist() * len(out.layers),
            "query_token": [out.tokens[i] for i, _ in pairs] * len(out.layers),
            "key_pos": k.tolist() * len(out.layers),
            "key_token": [out.keys[j] for _, j in pairs] * len(out.layers),
            "score": scores[:, q, k].reshape(-1).tolist(),
        }
    )
    if out.rollout is not None:
        rollout = out.rollout.detach().to("cpu", torch.float64)
        frame["rollout"] = rollout[:, q, k].reshape(-1).tolist()
    return frame


def knockout_frame(out: KnockoutOutput) -> pd.DataFrame:
    """One row per (source set, window) of a knockout sweep.

    Columns: ``source`` (the set's name), ``window`` (index of the sweep point), ``centre``
    (its centre layer; missing when one window holds all layers), ``layers`` (tuple of the
    blocked layers), ``probability`` (P(target) with the edges blocked) and
    ``relative_change`` (``(probability - base_probability) / base_probability``).
    """
    import pandas as pd

    probs = out.probabilities.detach().to("cpu", torch.float64)
    change = out.relative_change.detach().to("cpu", torch.float64)
    cells = [(s, w) for s in range(len(out.sources)) for w in range(len(out.windows))]
    names = list(out.sources)
    return pd.DataFrame(
        {
            "source": [names[s] for s, _ in cells],
            "window": [w for _, w in cells],
            "centre": pd.array(
                [None if out.centres is None else out.centres[w] for _, w in cells], dtype="Int64"
            ),
            "layers": [tuple(out.windows[w]) for _, w in cells],
            "probability": [probs[s, w].item() for s, w in cells],
            "relative_change": [change[s, w].item() for s, w in cells],
        }
    )


def pecore_frame(result: PecoreResult) -> pd.DataFrame:
    """CTI rows (one per output token), then CCI rows (one per selected x context token).

    Columns: ``kind`` (``"cti"`` or ``"cci"``), ``output_pos`` and ``output_token`` (index into
    ``output_current_tokens`` and the token), ``context_pos`` and ``context_token`` (index into
    the input context tokens; missing on CTI rows), ``score`` (the CTI score of the output
    token, or the CCI score of the context token for that output token) and ``selected``
    (CTI rows: the token was selected as context-sensitive; CCI rows: the context token is a
    cue).
    """
    import pandas as pd

    selected = {c.index for c in result.context_sensitive}
    rows = [
        ("cti", i, tok, None, None, float(score), i in selected)
        for i, (tok, score) in enumerate(
            zip(result.output_current_tokens, result.cti_scores, strict=True)
        )
    ]
    for c in result.context_sensitive:
        cues = {cue.index for cue in c.cues}
        rows += [
            ("cci", c.index, c.token, j, tok, float(score), j in cues)
            for j, (tok, score) in enumerate(
                zip(c.input_context_tokens, c.input_context_scores, strict=True)
            )
        ]
    columns = ["kind", "output_pos", "output_token", "context_pos", "context_token", "score"]
    frame = pd.DataFrame(rows, columns=[*columns, "selected"])
    frame["context_pos"] = frame["context_pos"].astype("Int64")
    return frame
