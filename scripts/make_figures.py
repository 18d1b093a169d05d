"""Rebuild every figure in ``figures/`` and the gallery ``figures/README.md``.

    python scripts/make_figures.py

Each figure is made by one ``hooklab`` command (run in this process through
:func:`hooklab.cli.main`, with ``--overwrite``) on the embedded toy model, offline; the gallery
shows each PNG under the command that made it.
"""

import pathlib
import shlex
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from hooklab.cli import main  # noqa: E402

LONG_CONTEXT = (
    "George was sick yesterday and stayed in bed all day. His sister Mary said that he had a "
    "bad cough and a fever."
)

#: (title, command, figures it writes, what to look at)
GALLERY = [
    (
        "Saliency attribution (words)",
        "attribute",
        ["attribution_saliency.png"],
        "Rows: source words; columns: generated words; each step sums to 1. ' hospital' "
        "comes from 'sick'.",
    ),
    (
        "Integrated gradients attribution",
        "attribute --method integrated_gradients --n_steps 16",
        ["attribution_integrated_gradients.png"],
        "The figure name follows the method.",
    ),
    (
        "PECoRe: CTI and CCI of the default example",
        "attribute-context --figure_path figures/pecore_default.png "
        "--save_path figures/pecore_default.json --viz_path figures/pecore_default.html",
        ["pecore_default.png"],
        "Boxed: the selected target ' hospital' (above the CTI threshold λ, marked on the "
        "colour bar) and its cue 'sick'.",
    ),
    (
        "PECoRe, the same figure as PDF (TrueType fonts)",
        "attribute-context --figure_path figures/pecore_default.pdf --noshow_viz",
        ["pecore_default.pdf"],
        "",
    ),
    (
        "PECoRe with a long context, single column",
        f"attribute-context --input_context_text {shlex.quote(LONG_CONTEXT)} "
        "--figure_path figures/pecore_long_context.png --figure_size single --noshow_viz",
        ["pecore_long_context.png"],
        "Tokens wrap onto more lines instead of overlapping.",
    ),
    (
        "Value zeroing: per-layer mixing, rollout, one query across layers",
        "mixing",
        [
            "value_zeroing_example0_layers.png",
            "value_zeroing_example0_rollout.png",
            "value_zeroing_example0_query_layers.png",
            "value_zeroing_example0_target_mixing.png",
        ],
        "The query token is the example's context-dependent word ' hospital'; the thick line "
        "is the cue 'sick'. The layer x key view fits models of 2 to 80+ layers.",
    ),
    (
        "Attention knockout (window: a quarter of the layers)",
        "knockout",
        ["knockout_example0.png"],
        "The legend names the blocked tokens; blocking the cue in layer 0 removes ' hospital'.",
    ),
    (
        "Attention knockout on a custom text and sources",
        "knockout --text 'Mary was sick yesterday. Her colleagues asked her to come to the' "
        "--sources 'cue=sick; subject=Mary; last=-1' --figure_path figures/knockout_custom.png",
        ["knockout_custom.png"],
        "",
    ),
]


def gallery() -> str:
    lines = [
        "# Figures",
        "",
        "Made by `python scripts/make_figures.py` (toy model, offline); each figure is written "
        "as PNG and PDF (TrueType fonts) in the style of `hooklab/output/style.py`: "
        "single-column (3.3 in) or double-column (6.9 in) wide.",
        "",
    ]
    for title, command, files, note in GALLERY:
        lines += [f"## {title}", "", "```bash", f"hooklab {command}", "```", ""]
        if note:
            lines += [note, ""]
        lines += [f"![{f}]({f})" for f in files if f.endswith(".png")] + [""]
    return "\n".join(lines)


def run() -> int:
    for _, command, _, _ in GALLERY:
        argv = [*shlex.split(command), "--overwrite"]
        print("$ hooklab", shlex.join(argv), flush=True)
        status = main(argv)
        if status:
            return status
    (ROOT / "figures" / "README.md").write_text(gallery(), encoding="utf-8")
    print("wrote figures/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(run())
