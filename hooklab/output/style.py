"""One figure style for every hooklab plot: paper sizes, TrueType fonts, token labels, colour bars.

Every plot function builds its figure with :func:`new_figure` inside :func:`paper_style`, so:

- PDFs embed TrueType fonts (``pdf.fonttype`` 42), never Type 3 (which some publishers
  reject and which do not select as text). :class:`PaperFigure` applies the style again when
  it saves, whatever the global ``rcParams`` say then; nothing changes them permanently.
- Widths match a two-column paper: :data:`SINGLE_COLUMN` (3.3 in) and :data:`DOUBLE_COLUMN`
  (6.9 in); fonts are 7-8 pt, the size a caption prints at.
- Tokens are readable: :func:`token_label` shows the leading-space markers of GPT-2 (``Ġ``,
  or a decoded space) and SentencePiece (``▁``) as a thin space, or removes them, or keeps
  them raw.
- Colour bars say what they show (:func:`colorbar`): the score's name and its normalisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from hooklab.output.files import atomic_write

SINGLE_COLUMN = 3.3  # inches: one column of a two-column paper (ACL, NeurIPS, ICML)
DOUBLE_COLUMN = 6.9  # inches: the full text width
WIDTHS = {"single": SINGLE_COLUMN, "double": DOUBLE_COLUMN}

FONT_SIZE = 7.0  # points: tick labels, legends, cell values
TITLE_SIZE = 8.0

#: rcParams applied while a figure is built and while it is saved (never set globally).
PAPER_RC: dict[str, Any] = {
    "pdf.fonttype": 42,  # TrueType in PDF, not Type 3
    "ps.fonttype": 42,
    "svg.fonttype": "none",  # text stays text in SVG
    "font.family": "DejaVu Sans",
    "font.size": FONT_SIZE,
    "axes.titlesize": TITLE_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE - 0.5,
    "ytick.labelsize": FONT_SIZE - 0.5,
    "legend.fontsize": FONT_SIZE - 0.5,
    "figure.titlesize": TITLE_SIZE + 1,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
}

SPACE_MODES = ("thin", "strip", "raw")
_SPACE_MARKERS = ("Ġ", "▁", " ")  # GPT-2 byte-level BPE, SentencePiece, decoded text
_THIN_SPACE = "\u2009"


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply :data:`PAPER_RC` inside the block (restored on exit)."""
    with matplotlib.rc_context(PAPER_RC):
        yield


class PaperFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that saves in the paper style (TrueType fonts)."""

    def savefig(self, *args: Any, **kwargs: Any) -> None:
        with paper_style():
            super().savefig(*args, **kwargs)


def width(size: str | float) -> float:
    """Figure width in inches: ``"single"`` (3.3), ``"double"`` (6.9) or a number of inches."""
    if isinstance(size, str):
        if size not in WIDTHS:
            raise ValueError(f"size must be 'single', 'double' or inches, got {size!r}.")
        return WIDTHS[size]
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0:
        raise ValueError(f"size must be 'single', 'double' or a positive width, got {size!r}.")
    return float(size)


def new_figure(figsize: tuple[float, float], **kwargs: Any) -> PaperFigure:
    """A constrained-layout :class:`PaperFigure` (no pyplot: nothing shown, any backend)."""
    return PaperFigure(figsize=figsize, layout=kwargs.pop("layout", "constrained"), **kwargs)


def token_label(token: str, spaces: str = "thin") -> str:
    """Return ``token`` as a figure label.

    Args:
        token: a token's text (``" was"``, ``"Ġwas"`` or ``"▁was"``).
        spaces: ``"thin"``: leading space markers become one thin space (word starts stay
            visible without a glyph that reads as ``_was``); ``"strip"``: removed; ``"raw"``:
            the token as the tokenizer writes it. Newlines and tabs are shown as ``\\n``,
            ``\\t``; a token of spaces only is shown as ``␣``.
    """
    if spaces not in SPACE_MODES:
        raise ValueError(f"spaces must be one of {SPACE_MODES}, got {spaces!r}.")
    if spaces == "raw":
        return token.replace("\n", "\\n").replace("\t", "\\t")
    body = token.lstrip("".join(_SPACE_MARKERS))
    lead = len(token) - len(body)
    body = body.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if not body:
        return "␣" * max(lead, 1) if token else ""
    return (_THIN_SPACE if lead and spaces == "thin" else "") + body


def token_labels(tokens: Sequence[str], spaces: str = "thin") -> list[str]:
    """:func:`token_label` of each token."""
    return [token_label(t, spaces) for t in tokens]


def label_size(n: int, length_in: float, largest: float = FONT_SIZE) -> float:
    """Font size (pt) that fits ``n`` labels side by side along ``length_in`` inches."""
    pitch = 72 * length_in / max(n, 1)  # points per label
    return max(3.5, min(largest, 0.85 * pitch))


def rotate_ticks(ax, labels: Sequence[str], size: float) -> None:
    """Horizontal x labels when they fit their cells, else 45° (never 90°).

    At 45° neighbouring labels are ``pitch · sin 45°`` apart, so the font shrinks to fit that.
    """
    pitch = 72 * ax.figure.get_figwidth() * ax.get_position().width / max(len(labels), 1)
    longest = max((len(x) for x in labels), default=0)
    if longest * 0.6 * size > pitch:
        fit = min(size, max(3.5, 0.7 * pitch / 1.25))
        ax.tick_params(axis="x", labelrotation=45, labelsize=fit)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")


def score_label(name: str, normalization: str | None = None) -> str:
    """A colour-bar label: the score's name, then its normalisation in parentheses."""
    return f"{name} ({normalization})" if normalization else name


def colorbar(fig: Figure, image, ax, label: str, **kwargs: Any):
    """A colour bar with ``label`` (the score's name and normalisation) in the paper font."""
    bar = fig.colorbar(image, ax=ax, **kwargs)
    bar.set_label(label, fontsize=FONT_SIZE)
    bar.ax.tick_params(labelsize=FONT_SIZE - 1, width=0.5, length=2)
    bar.outline.set_linewidth(0.5)
    return bar


def save(
    fig: Figure, path: str | Path, formats: Sequence[str] = ("png", "pdf"), dpi: int = 300
) -> list[Path]:
    """Write ``fig`` once per format next to ``path`` (suffix replaced); return the paths.

    Each file is written atomically (a unique temporary file moved into place), so an
    interrupted run never leaves a half-written figure. Existing files are replaced: callers
    check ``--overwrite`` before computing.
    """
    path = Path(path)
    written = []
    for ext in formats:
        target = path.with_suffix(f".{ext}")

        def draw(tmp: str, ext: str = ext) -> None:
            with paper_style():
                fig.savefig(tmp, dpi=dpi, format=ext)

        written.append(atomic_write(target, draw, overwrite=True))
    return written
