"""One view for every output: one colour scale, colour detection, HTML legend, figures."""

from __future__ import annotations

import dataclasses
import io
import math
import re

import matplotlib

matplotlib.use("Agg")

import pytest
from matplotlib.figure import Figure
from test_output_io import BUILDERS

from hooklab.output import view
from hooklab.output.view import ColorScale, html_legend, use_color
from hooklab.pecore.result import Cue

ANSI = "\x1b["


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_color_scale_signed_and_sequential():
    signed = ColorScale.fit([[-2.0, 1.0], [float("nan"), 0.5]])
    assert (signed.vmin, signed.vmax, signed.cmap_name) == (-2.0, 2.0, "RdBu_r")
    r, _, b = signed.rgb(2.0)
    assert r > 2 * b and r > 100  # red for positive
    r, _, b = signed.rgb(-2.0)
    assert b > 2 * r and b > 80  # blue for negative
    assert min(signed.rgb(0.0)) > 230  # near white at 0
    assert signed.rgb(5.0) == signed.rgb(2.0)  # clipped
    seq = ColorScale.fit([0.0, 0.25, None, 0.5])
    assert (seq.vmin, seq.vmax, seq.cmap_name) == (0.0, 0.5, "Reds")
    assert min(seq.rgb(0.0)) > 230 and seq.rgb(0.5)[0] > seq.rgb(0.5)[2] + 50
    assert seq.ink(0.5) == (255, 255, 255) and seq.ink(0.0) == (0, 0, 0)
    assert ColorScale.fit([]).vmax == 1.0 and ColorScale.fit([0.1], signed=True).signed
    assert seq.mpl()["cmap"].name.startswith("Reds") and seq.mpl()["vmax"] == 0.5


def test_use_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(None, FakeTTY()) is True
    assert use_color(None, io.StringIO()) is False  # not a terminal
    assert use_color(True, io.StringIO()) is True and use_color(False, FakeTTY()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_color(None, FakeTTY()) is False
    assert use_color(True, FakeTTY()) is True
    monkeypatch.setenv("NO_COLOR", "")  # an empty NO_COLOR does not count (no-color.org)
    assert use_color(None, FakeTTY()) is True


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_terminal_colour(kind, monkeypatch, capsys):
    out = BUILDERS[kind]()
    render = out.to_text
    assert ANSI not in render(color=False)
    assert "\x1b[48;2;" in render(color=True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    out.show()  # captured stdout is not a terminal: plain
    assert ANSI not in capsys.readouterr().out
    monkeypatch.setattr("sys.stdout", FakeTTY())
    assert "\x1b[48;2;" in render()
    monkeypatch.setenv("NO_COLOR", "1")
    assert ANSI not in render()


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_html_has_one_legend_and_uses_the_one_scale(kind, monkeypatch):
    out = BUILDERS[kind]()
    page = out.to_html()
    assert page.count('class="hooklab-legend"') >= 1
    assert "linear-gradient" in page
    monkeypatch.setattr(ColorScale, "rgb", lambda self, value: (1, 2, 3))
    assert "background-color:rgb(1,2,3)" in out.to_html()  # every cell goes through it


def test_html_cell_colours_and_legend_labels():
    out = BUILDERS["knockout"]()
    change = (100 * out.relative_change).double()
    scale = ColorScale.fit(change.tolist(), signed=True)
    page = out.to_html()
    for v in change.flatten().tolist():
        assert "background-color:rgb({},{},{})".format(*scale.rgb(v)) in page
    assert f">{scale.vmin:.3g}<" in page and f">{scale.vmax:.3g}<" in page
    legend = html_legend(ColorScale(0.0, 0.5), "mix")
    assert ">mix<" in legend and ">0<" in legend and ">0.5<" in legend
    assert len(re.findall(r"rgb\(\d+,\d+,\d+\)", legend)) == 11


def test_mixing_text_blanks_invisible_keys():
    out = BUILDERS["mixing"]()
    text = out.to_text(color=False, digits=3)
    first = next(line for line in text.splitlines() if line.startswith("<s>"))
    assert first.split("│")[1].split() == [f"{out.scores[-1, 0, 0].item():.3f}"]
    assert "scores, layer 2" in text and "rollout, layer 0" in out.to_text(0, rollout=True)


def test_knockout_text_values():
    out = BUILDERS["knockout"]()
    text = out.to_text(color=False)
    row = next(line for line in text.splitlines() if line.startswith("cue"))
    assert row.split("│")[1].split() == ["-50.0", "+100.0"]


def test_pecore_text_and_html_colours():
    res = BUILDERS["pecore"]()
    plain = res.to_text(color=False)
    assert "{come}(0.70)" in plain and "[sick](0.90)" in plain and ANSI not in plain
    coloured = res.to_text(color=True)
    assert ANSI in coloured and "sick]" in coloured
    page = res.to_html()
    assert page.count('class="hooklab-legend"') == 2  # CTI and one CCI row
    cci = ColorScale.fit(res.context_sensitive[0].input_context_scores)
    assert "background-color:rgb({},{},{})".format(*cci.rgb(0.9)) in page


def test_pecore_text_shows_small_scores_with_two_significant_digits():
    # CCI scores of a translation example (0.0018 and 0.0004) used to read "(0.00)".
    res = BUILDERS["pecore"]()
    (cs,) = res.context_sensitive
    cs = dataclasses.replace(
        cs,
        score=2.08,
        input_context_scores=(0.0004, math.nan, 0.0018),
        cues=(Cue(0, "George", 0.0004), Cue(2, " sick", 0.0018)),
    )
    res = dataclasses.replace(res, context_sensitive=(cs,), cti_threshold=1.42)
    text = res.to_text(color=False)
    assert "[George](0.0004) was [sick](0.0018)" in text
    assert "{come}(2.1)" in text and "CTI threshold = 1.4)" in text
    assert "(0.00)" not in text


def test_mixing_text_digits_follow_the_scores():
    out = BUILDERS["mixing"]()
    small = dataclasses.replace(out, scores=out.scores * 1e-4, rollout=None)
    first = next(line for line in small.to_text(color=False).splitlines() if line[:3] == "<s>")
    value = small.scores[-1, 0, 0].item()
    assert first.split("│")[1].split() == [f"{value:.{view.decimals(small.scores[-1])}f}"]
    assert float(first.split("│")[1]) > 0
    fixed = next(line for line in small.to_text(color=False, digits=2).splitlines()
                 if line[:3] == "<s>")  # fmt: skip
    assert fixed.split("│")[1].split() == ["0.00"]


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_every_output_plots_a_figure_on_the_one_scale(kind):
    out = BUILDERS[kind]()
    fig = out.plot()
    assert isinstance(fig, Figure)
    fig.savefig(io.BytesIO(), format="png")
    if kind == "mixing":
        image = fig.axes[0].images[0]
        assert image.get_cmap().name.startswith("Reds")
        scale = ColorScale.fit(out.scores.double().tril().tolist())
        assert image.get_clim() == (0.0, pytest.approx(scale.vmax))


def test_display_token_is_one_function():
    from hooklab.attribution.views import display_token

    assert display_token is view.display_token
    assert display_token("  a\n") == "▁▁a\\n"
