"""Rebuild every figure in ``figures/`` and the gallery ``figures/README.md``.

    python scripts/make_figures.py                   # every figure
    python scripts/make_figures.py pecore_toy_mt     # only the entries writing pecore_toy_mt*

Each figure is made by one ``hooklab`` command (run in this process through
:func:`hooklab.cli.main`, with ``--overwrite``) on an embedded toy model (``toy`` or
``toy-mt``), offline; the gallery shows each PNG under the command that made it. Names given on
the command line select the entries whose figures start with one of them (the gallery is
always rewritten in full), so one figure can be remade without touching the others.
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
MT_SOURCE = "The table was old. <brk> It was broken."  # toy-mt's default example, both sides
MT_TARGET = "Der Tisch war alt. <brk> Er war kaputt."

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
        "--input_current_text 'His colleagues asked him to come' "
        "--figure_path figures/pecore_long_context.png --figure_size single --noshow_viz",
        ["pecore_long_context.png"],
        "Tokens wrap onto more lines instead of overlapping.",
    ),
    (
        "PECoRe on the translation model: input and output context (single column)",
        "attribute-context --model_name_or_path toy-mt --figure_path figures/pecore_toy_mt.png "
        "--figure_size single --noshow_viz",
        ["pecore_toy_mt.png"],
        f"The default toy-mt example (`{MT_SOURCE}` → `{MT_TARGET}`). CTI selects ' Er'; its "
        "CCI scores cover the input context and the output context on one colour scale, and "
        "the cue is on the output side ('Der', boxed).",
    ),
    (
        "PECoRe on the translation model, as PDF",
        "attribute-context --model_name_or_path toy-mt --figure_path figures/pecore_toy_mt.pdf "
        "--figure_size single --noshow_viz",
        ["pecore_toy_mt.pdf"],
        "",
    ),
    (
        "Input x gradient on the translation model: source and target side",
        f"attribute --model_name_or_path toy-mt --prompt {shlex.quote(MT_SOURCE)} "
        f"--target {shlex.quote(MT_TARGET)} --method input_x_gradient "
        "--figure_path figures/attribution_toy_mt.png --noshow",
        ["attribution_toy_mt.png"],
        "Rows: the encoder tokens (source, above the rule), then the decoder prefix (target); "
        "one colour scale, each step's shares sum to 1 over both sides. The German words lean "
        "on their English source words (Der, Tisch ← table; alt ← old; Er ← It). In Python, "
        "`out[0].plot(hide_special=True)` drops the `</s>`, `<pad>` and `<brk>` rows.",
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
    (
        "Information-flow routes (Ferrando and Voita, 2024)",
        "routes",
        ["routes_example0.png"],
        "Tokens on x, layers on y; edge width by importance (share of the target state). The "
        "route into the last position's prediction, from one forward pass.",
    ),
]


def gallery() -> str:
    lines = [
        "# Figures",
        "",
        "Made by `python scripts/make_figures.py` (embedded toy models, offline); each figure "
        "is written "
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


def run(names: list[str]) -> int:
    for _, command, files, _ in GALLERY:
        if names and not any(f.startswith(tuple(names)) for f in files):
            continue
        argv = [*shlex.split(command), "--overwrite"]
        print("$ hooklab", shlex.join(argv), flush=True)
        status = main(argv)
        if status:
            return status
    (ROOT / "figures" / "README.md").write_text(gallery(), encoding="utf-8")
    print("wrote figures/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
