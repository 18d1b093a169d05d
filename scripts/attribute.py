"""Feature attribution of generated (or forced) tokens from the command line (Fire).

    python scripts/attribute.py                                   # toy model, saliency
    python scripts/attribute.py --method integrated_gradients --n_steps 16
    python scripts/attribute.py --model_name_or_path gpt2 --prompt "..." --target "..."

Prints the attribution table and writes a heatmap to ``--figure_path`` (PNG and PDF).
"""

from __future__ import annotations

from pathlib import Path

import fire

import hooklab

DEFAULT_PROMPT = "George was sick yesterday. His colleagues asked him to come"


def main(
    model_name_or_path: str = "toy",
    prompt: str = DEFAULT_PROMPT,
    target: str | None = None,
    method: str = "saliency",
    attributed_fn: str = "probability",
    step_scores: tuple[str, ...] = ("probability",),
    aggregate: str | None = "words",
    figure_path: str | None = "figures/attribution_saliency.png",
    save_path: str | None = None,
    overwrite: bool = False,
    max_new_tokens: int = 8,
    show: bool = True,
    device: str | None = None,
    dtype: str | None = None,
    **method_kwargs,
) -> None:
    """Attribute each target token to the tokens before it; print, plot and save."""
    if isinstance(step_scores, str):
        step_scores = (step_scores,)
    model = hooklab.load(model_name_or_path, device=device, dtype=dtype)
    out = hooklab.attribute(
        model,
        prompt,
        target,
        method=method,
        attributed_fn=attributed_fn,
        step_scores=list(step_scores),
        generation_kwargs={"max_new_tokens": max_new_tokens},
        **method_kwargs,
    )
    view = out.aggregate(aggregate) if aggregate else out
    if show:
        view.show()
    if save_path:
        print(f"saved {out.save(save_path, overwrite=overwrite)}")
    if figure_path:
        path = Path(figure_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = view.plot(title=f"{method} ({attributed_fn})")
        for suffix in (".png", ".pdf"):
            fig.savefig(path.with_suffix(suffix), dpi=200, bbox_inches="tight")
            print(f"saved {path.with_suffix(suffix)}")


if __name__ == "__main__":
    fire.Fire(main)
