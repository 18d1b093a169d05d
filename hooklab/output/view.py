"""One view of every output: one colour scale, colour detection, tables and one legend.

Every renderer -- attribution, mixing, knockout and PECoRe; terminal, HTML and matplotlib --
colours scores with :class:`ColorScale`: diverging blue-white-red (matplotlib's ``"RdBu_r"``,
limits symmetric around 0) when any score is negative, sequential white-red (``"Reds"``, from 0)
when none is. Terminal tables are coloured only when asked (``color=True``) or, by default,
when stdout is a terminal and ``NO_COLOR`` is unset (https://no-color.org); HTML carries a
legend (a colour bar with its minimum and maximum) under every table.
"""

from __future__ import annotations

import functools
import html
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

DIVERGING = "RdBu_r"  # signed scores: blue (negative) - white - red (positive)
SEQUENTIAL = "Reds"  # non-negative scores: white - red

RGB = tuple[int, int, int]


def display_token(token: str) -> str:
    """Return ``token`` made readable: newlines/tabs escaped, leading spaces shown as ``▁``."""
    token = token.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    stripped = token.lstrip(" ")
    return "▁" * (len(token) - len(stripped)) + stripped


def decimals(values: Any, significant: int = 2, most: int = 8) -> int:
    """Decimals that show the largest ``|value|`` of ``values`` with ``significant`` digits.

    Text views use it so that small scores stay readable: a peak of 0.44 gives 2 decimals,
    0.0188 gives 3 (``0.019``), 6e-6 gives 7; a peak of 28 gives 0. At most ``most``.
    """
    peak = max((abs(v) for v in _finite(values)), default=0.0)
    if peak == 0:
        return significant
    return min(max(significant - 1 - math.floor(math.log10(peak)), 0), most)


def number_format(
    *values: Any,
    significant: int = 2,
    digits: int | None = None,
    sign: bool = False,
    missing: str = "",
) -> Callable[[float | None], str]:
    """The one number format of every hooklab view: fixed-point decimals chosen from the data.

    Args:
        values: tensors, arrays or nested sequences; the decimals are the most any of them
            needs to show its largest ``|value|`` with ``significant`` digits
            (:func:`decimals`: a peak of 0.44 gives ``0.44``, 0.0188 gives ``0.019``).
        significant: significant digits at the largest value.
        digits: a fixed number of decimals instead (an int >= 0).
        sign: always write the sign (``+1.5``), as for relative changes.
        missing: the text of None and NaN.

    Returns:
        A function ``value -> str``.
    """
    if digits is None:
        digits = max((decimals(v, significant) for v in values), default=significant)
    elif isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
        raise ValueError(
            f"digits must be None (chosen from the values shown) or an int >= 0, got {digits!r}."
        )
    spec = f"{'+' if sign else ''}.{digits}f"

    def fmt(value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return missing
        return f"{value:{spec}}"

    return fmt


def _finite(values: Any) -> list[float]:
    """Every finite number in a tensor, array or nested sequence (None and NaN skipped)."""
    if isinstance(values, Tensor) or hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [x for v in values for x in _finite(v)]
    if isinstance(values, (int, float)) and math.isfinite(values):
        return [float(values)]
    return []


@functools.lru_cache(maxsize=4)
def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=(0, 0, 0, 0))


@dataclass(frozen=True)
class ColorScale:
    """The colour of a score: one scale for terminal, HTML and matplotlib views.

    Attributes:
        vmin: the score drawn at the low end (``-vmax`` for signed scores, else 0).
        vmax: the score drawn at the high end.
    """

    vmin: float
    vmax: float

    @classmethod
    def fit(cls, values: Any, *, signed: bool | None = None) -> ColorScale:
        """The scale of ``values``: signed (diverging) if any is negative, unless ``signed``."""
        finite = _finite(values)
        peak = max((abs(v) for v in finite), default=0.0) or 1.0
        if signed is None:
            signed = any(v < 0 for v in finite)
        return cls(-peak if signed else 0.0, peak)

    @property
    def signed(self) -> bool:
        return self.vmin < 0

    @property
    def cmap_name(self) -> str:
        return DIVERGING if self.signed else SEQUENTIAL

    def colormap(self):
        """The matplotlib colormap (NaN drawn transparent)."""
        return _colormap(self.cmap_name)

    def mpl(self) -> dict[str, Any]:
        """Keyword arguments for ``imshow`` / ``pcolormesh``: ``cmap``, ``vmin``, ``vmax``."""
        return {"cmap": self.colormap(), "vmin": self.vmin, "vmax": self.vmax}

    def fraction(self, value: float) -> float:
        """Where ``value`` sits on the scale, clipped to 0..1."""
        return min(max((value - self.vmin) / (self.vmax - self.vmin), 0.0), 1.0)

    def rgb(self, value: float) -> RGB:
        """Background colour of ``value`` as 0-255 RGB."""
        r, g, b, _ = self.colormap()(self.fraction(value))
        return round(255 * r), round(255 * g), round(255 * b)

    def ink(self, value: float) -> RGB:
        """Readable text colour on ``value``'s background: white on dark, black on light."""
        r, g, b = self.rgb(value)
        return (255, 255, 255) if 0.299 * r + 0.587 * g + 0.114 * b < 140 else (0, 0, 0)


def use_color(color: bool | None = None, stream: Any = None) -> bool:
    """Whether to colour terminal output: ``color`` if given, else a TTY without NO_COLOR.

    Without ``color``: colour only if ``stream`` (stdout by default) is a terminal and the
    ``NO_COLOR`` environment variable is unset or empty (https://no-color.org).
    """
    if color is not None:
        return bool(color)
    if os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def ansi(text: str, value: float, scale: ColorScale) -> str:
    """``text`` on ``value``'s colour with 24-bit ANSI escapes (NaN: left plain)."""
    if value is None or not math.isfinite(value):
        return text
    (r, g, b), (fr, fg, fb) = scale.rgb(value), scale.ink(value)
    return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;{fr};{fg};{fb}m{text}\x1b[0m"


def text_legend(scale: ColorScale, label: str = "score", width: int = 12) -> str:
    """One terminal line: ``label: vmin ███ vmax`` in the scale's colours."""
    steps = [scale.vmin + (scale.vmax - scale.vmin) * k / (width - 1) for k in range(width)]
    bar = "".join(ansi(" ", v, scale) for v in steps)
    return f"{label}: {scale.vmin:.3g} {bar} {scale.vmax:.3g}"


def html_style(value: float, scale: ColorScale) -> str:
    """Inline CSS colouring a cell or span by ``value`` (empty for NaN)."""
    if value is None or not math.isfinite(value):
        return ""
    (r, g, b), (fr, fg, fb) = scale.rgb(value), scale.ink(value)
    return f"background-color:rgb({r},{g},{b});color:rgb({fr},{fg},{fb});"


def html_legend(scale: ColorScale, label: str = "score", stops: int = 11) -> str:
    """A colour bar from ``vmin`` to ``vmax`` with both labelled (one legend for all views)."""
    values = [scale.vmin + (scale.vmax - scale.vmin) * k / (stops - 1) for k in range(stops)]
    gradient = ", ".join("rgb({},{},{})".format(*scale.rgb(v)) for v in values)
    bar = (
        "display:inline-block;width:140px;height:10px;border:1px solid #ccc;"
        f"background:linear-gradient(to right, {gradient})"
    )
    return (
        '<div class="hooklab-legend" style="display:flex;align-items:center;gap:6px;'
        'margin-top:4px;font-size:11px;font-family:monospace">'
        f"<span>{html.escape(label)}</span><span>{scale.vmin:.3g}</span>"
        f'<span style="{bar}"></span><span>{scale.vmax:.3g}</span></div>'
    )


Footer = Sequence[tuple[str, Sequence[float]]]


def text_grid(
    rows: Sequence[str],
    cols: Sequence[str],
    grid: Sequence[Sequence[float]],
    *,
    scale: ColorScale,
    color: bool,
    fmt: Callable[[float], str] | None = None,
    title: Iterable[str] = (),
    footer: Footer = (),
    max_width: int | None = None,
) -> str:
    """A terminal table: ``grid[i][j]`` at row ``rows[i]``, column ``cols[j]``.

    NaN cells are blank; coloured cells use :func:`ansi`. ``footer`` rows (e.g. step scores)
    follow a rule, uncoloured. With ``max_width``, columns are split into blocks whose lines
    fit (each block repeats the row labels). ``fmt`` None: decimals chosen from the grid's
    largest value (:func:`number_format`), so small scores do not all read ``0.00``.
    """
    fmt = fmt or number_format(grid)
    rows, cols = [display_token(r) for r in rows], [display_token(c) for c in cols]
    cells = [["" if math.isnan(v) else fmt(v) for v in row] for row in grid]
    foot = [["" if math.isnan(v) else fmt(v) for v in values] for _, values in footer]
    label_w = max([len(x) for x in rows] + [len(name) for name, _ in footer] + [1])
    widths = [max([len(c)] + [len(r[j]) for r in cells + foot]) for j, c in enumerate(cols)]
    blocks: list[list[int]] = [[]]
    used = label_w + 3
    for j, w in enumerate(widths):
        if max_width is not None and blocks[-1] and used + w + 1 > max_width:
            blocks.append([])
            used = label_w + 3
        blocks[-1].append(j)
        used += w + 1

    def cell(i: int, j: int) -> str:
        text = cells[i][j].rjust(widths[j])
        return ansi(text, grid[i][j], scale) if color and cells[i][j] else text

    lines = list(title)
    for block in blocks:
        lines.append(" " * label_w + " │ " + " ".join(cols[j].rjust(widths[j]) for j in block))
        rule = "─" * label_w + "─┼─" + "─".join("─" * widths[j] for j in block)
        lines.append(rule)
        for i, label in enumerate(rows):
            lines.append(label.ljust(label_w) + " │ " + " ".join(cell(i, j) for j in block))
        if rows and footer:
            lines.append(rule)
        for (name, _), values in zip(footer, foot):
            cells_ = " ".join(values[j].rjust(widths[j]) for j in block)
            lines.append(name.ljust(label_w) + " │ " + cells_)
        lines.append("")
    if color and rows:
        lines.append(text_legend(scale))
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


_CELL = "padding:2px 6px;text-align:right;border:1px solid #eee;"
_HEAD = "padding:2px 6px;white-space:pre;font-weight:bold;"
_RULE = "border-top:2px solid #999;"


def html_grid(
    rows: Sequence[str],
    cols: Sequence[str],
    grid: Sequence[Sequence[float]],
    *,
    scale: ColorScale,
    fmt: Callable[[float], str],
    title: str,
    kind: str,
    legend: str = "score",
    footer: Footer = (),
    rule_before: int | None = None,
    notes: Iterable[str] = (),
) -> str:
    """A self-contained HTML ``<div>``: title, ``<table>`` of the grid and the legend.

    Inline styles only; every token is escaped. Hovering a cell shows its row, column and the
    full-precision value. ``kind`` names the CSS class ``hooklab-{kind}``.
    """
    esc = html.escape
    rows, cols = [display_token(r) for r in rows], [display_token(c) for c in cols]
    parts = [
        f'<div class="hooklab-{kind}" style="font-family:monospace;font-size:12px;margin:8px 0">',
        f'<div style="font-weight:bold;margin-bottom:4px">{esc(title)}</div>',
        *(f'<div style="white-space:pre-wrap;margin-bottom:4px">{esc(n)}</div>' for n in notes),
        "<table>",
        "<tr><th></th>",
        *(f'<th style="{_HEAD}text-align:right">{esc(c)}</th>' for c in cols),
        "</tr>",
    ]
    for i, label in enumerate(rows):
        top = _RULE if i == rule_before and i > 0 else ""
        parts.append(f'<tr style="{top}"><th style="{_HEAD}text-align:left">{esc(label)}</th>')
        for j, v in enumerate(grid[i]):
            if math.isnan(v):
                parts.append(f'<td style="{_CELL}"></td>')
                continue
            tip = esc(f"{label} → {cols[j]}: {v:.6g}", quote=True)
            style = _CELL + html_style(v, scale)
            parts.append(f'<td title="{tip}" style="{style}">{esc(fmt(v))}</td>')
        parts.append("</tr>")
    for k, (name, values) in enumerate(footer):
        top = _RULE if k == 0 and rows else ""
        parts.append(
            f'<tr style="{top}"><th style="{_HEAD}text-align:left;font-style:italic">'
            f"{esc(name)}</th>"
        )
        parts.extend(
            f'<td style="{_CELL}">{"" if math.isnan(v) else esc(fmt(v))}</td>' for v in values
        )
        parts.append("</tr>")
    parts.append("</table>")
    if rows:
        parts.append(html_legend(scale, legend))
    parts.append("</div>")
    return "\n".join(parts)


def html_tokens(
    tokens: Sequence[str],
    scores: Sequence[float | None],
    scale: ColorScale,
    *,
    selected: Iterable[int] = (),
    marks: Mapping[int, str] | None = None,
    fmt: Callable[[float | None], str] | None = None,
) -> str:
    """Tokens as ``<span>``s coloured by their scores (the one HTML token view).

    ``selected`` tokens are underlined. ``marks[i]`` is the opening tag of a marked token
    without its closing ``>`` (e.g. ``'<mark class="cue"'``): token ``i`` is then that element,
    followed by its score (written with ``fmt``) in a ``<sub class="hl-score">``.
    Every token's tooltip holds its full-precision score.
    """
    selected, marks = set(selected), dict(marks or {})
    fmt = fmt or number_format([scores[i] for i in marks], missing="None")
    out = []
    for i, (tok, x) in enumerate(zip(tokens, scores, strict=True)):
        value = math.nan if x is None else float(x)
        style = html_style(value, scale)
        title = "None" if math.isnan(value) else f"{value:.6g}"
        text = html.escape(tok)
        if i in marks:
            out.append(
                f'{marks[i]} style="{style}" title="{title}">{text}</mark>'
                f'<sub class="hl-score">{fmt(x)}</sub>'
            )
            continue
        if i in selected:
            style += "border-bottom:2px solid black;font-weight:bold;"
        out.append(f'<span style="{style}" title="{title}">{text}</span>')
    return "".join(out)
