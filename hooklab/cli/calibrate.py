"""``calibrate-cti``: the CTI threshold of ``cite`` calibrated on annotated examples (MIRAGE)."""

from __future__ import annotations

from typing import Any

from hooklab.cli.args import UsageError
from hooklab.cli.checks import check_outputs


def calibrate_cti(
    examples: str,
    model_name_or_path: str = "toy-rag",
    heldout_fraction: float = 0.3,
    seed: int = 0,
    save_path: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    **options: Any,
) -> None:
    """Pick the CTI threshold that best agrees with annotated examples; print it and the
    held-out agreements (calibrated vs mean + k std).

    One PECoRe run per example records every token's CTI and CCI scores; the threshold search
    is offline (hooklab/cite/calibrate.py). Pass the threshold to ``cite --cti_threshold``.

    Args:
        examples: a JSONL file, one object a line: question, documents, answer,
            gold_documents (per answer sentence, the 0-based ids of its documents).
        model_name_or_path: "toy-rag" (the embedded retrieval model), a checkpoint directory
            or a hub name.
        heldout_fraction: the share of examples held out for the report (seeded split).
        seed: the seed of the split.
        save_path: write the calibration (threshold, agreements, split) as JSON.
        overwrite: replace an existing output file.
        device: "cpu", "cuda"...; default: CUDA when available.
    """
    from hooklab.cite import CiteOptions
    from hooklab.cite.calibrate import calibrate_cti as run
    from hooklab.cite.calibrate import split_examples
    from hooklab.cite.examples import read_examples

    check_outputs([save_path], overwrite)
    opts = CiteOptions(**options)  # checked before the model loads
    rows = read_examples(examples)
    try:
        split_examples(len(rows), heldout_fraction, seed)
    except ValueError as err:
        raise UsageError(str(err)) from None
    import hooklab

    model = hooklab.load(model_name_or_path, device=device)
    result = run(model, rows, heldout_fraction=heldout_fraction, seed=seed, options=opts)
    print(result.to_text())
    if save_path is not None:
        from hooklab.output.io import write_json

        write_json(save_path, result.to_dict(), overwrite=overwrite)
