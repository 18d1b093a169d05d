"""``demo``: serve the interactive PECoRe page (:mod:`hooklab.demo`, needs the demo extra)."""

from __future__ import annotations

from hooklab.cli.args import UsageError


def demo(
    model_name_or_path: str = "toy",
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    device: str | None = None,
    dtype: str | None = None,
) -> None:
    """Serve an interactive PECoRe page (Gradio) with "Show code"; Ctrl-C stops it.

    The page opens on the model's release example (toy: " hospital" with the cue "sick";
    toy-mt: the translation example with its <brk> templates). Install the extra first:
    pip install -e ".[demo]".

    Args:
        model_name_or_path: "toy" (the embedded LM), "toy-mt" (the embedded translation
            model), a checkpoint directory or a hub name.
        host: the address to serve on; 127.0.0.1 (this machine only) by default, 0.0.0.0 to
            share it on your network.
        port: the port to serve on.
        share: also ask Gradio for a temporary public link (needs the internet).
        device: torch device (default: CUDA if available, else CPU).
        dtype: torch dtype, e.g. "float32".
    """
    if isinstance(port, bool) or not 0 < port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {port!r}.")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError(
            'the demo needs Gradio: pip install -e ".[demo]" (or pip install "hooklab[demo]").'
        ) from None
    from hooklab.demo.app import launch

    print(f"Serving the PECoRe demo for {model_name_or_path!r} on http://{host}:{port}")
    launch(model_name_or_path, host=host, port=port, share=share, device=device, dtype=dtype)
