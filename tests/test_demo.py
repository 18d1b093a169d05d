"""The PECoRe demo: form parsing, "Show code" (run and compared with the page), sessions,
and an end-to-end run in a real headless browser (skipped without Chromium or the extra)."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hooklab.cli import commands, main
from hooklab.demo import cli_code, default_form, python_code, settings_from_form
from hooklab.demo.code import PROGRAMS
from hooklab.pecore import PecoreOptions

ROOT = Path(__file__).resolve().parents[1]
#: non-default settings with characters a shell would eat
TRICKY = {
    "input_context_text": 'George\'s dad was "sick" yesterday ($5, `x`).',
    "attribution_topk": "2",
    "context_sensitivity_std_threshold": "0.5",
    "attribution_method": "input_x_gradient",
    "special_tokens_to_keep": "<|endoftext|>",
}


def summary(result) -> dict:
    """What the page shows: selected tokens, their CTI scores and cues, every CTI score."""
    return {
        "cti": [round(x, 5) for x in result.cti_scores],
        "selected": [
            (c.index, c.token, round(c.score, 5), c.contextless_token,
             [(q.token, q.side, round(q.score, 6)) for q in c.cues])
            for c in result.context_sensitive
        ],
    }  # fmt: skip


def test_default_form_follows_the_release_example():
    form = default_form("toy")
    assert form["input_context_text"] == "George was sick yesterday."
    assert form["output_template"] == "" and form["attribution_topk"] == ""
    mt = settings_from_form("toy-mt", {})
    assert mt.output_context_text and mt.options.input_template == "{context} <brk> {current}"
    assert "pecore(" in python_code(mt) and "input_template=" in python_code(mt)
    assert "--input_template" not in cli_code(mt)  # the command's default for toy-mt


@pytest.mark.parametrize("field, raw, message", [
    ("attribution_topk", "abc", "attribution_topk must be a positive int or None, got str: 'abc'"),
    ("attribution_topk", "0", "attribution_topk must be a positive int or None, got 0"),
    ("attribution_topk", "2.5", "attribution_topk must be a positive int or None, got float: 2.5"),
    ("context_sensitivity_std_threshold", "x", "must be a finite number or None, got str: 'x'"),
    ("context_sensitivity_std_threshold", "inf", "must be a finite number or None, got inf"),
    ("context_sensitivity_metric", "kl", "Unknown context sensitivity metric 'kl'"),
    ("input_template", "{current}{oops}", "unknown placeholders ['oops']"),
])  # fmt: skip
def test_bad_options_raise_the_api_message(field, raw, message):
    with pytest.raises((ValueError, TypeError, KeyError)) as err:
        settings_from_form("toy", {field: raw})
    from hooklab.demo.session import error_message

    assert message in error_message(err.value)


@pytest.mark.parametrize("model_name", ["toy", "toy-mt"])
@pytest.mark.parametrize("program", list(PROGRAMS))
def test_cli_code_parses_back_to_the_same_settings(model_name, program):
    settings = settings_from_form(model_name, {**TRICKY, "output_template": "{current}"})
    argv = shlex.split(cli_code(settings, program).replace("\\\n", " "))
    assert " ".join(argv[: len(PROGRAMS[program].split())]) == PROGRAMS[program]
    kwargs = commands()["attribute-context"].parse(argv[len(PROGRAMS[program].split()) :])
    from hooklab.cli.pecore import pecore_options
    from hooklab.pecore.examples import release_example

    opts = {k: kwargs.pop(k) for k in list(kwargs) if k in PecoreOptions.field_names()}
    assert pecore_options(opts, release_example(model_name)["options"]) == settings.options
    assert {k: v for k, v in kwargs.items() if k != "model_name_or_path"} == {
        k: v for k, v in settings.texts().items() if v is not None
    }


def test_generated_code_gives_the_page_result(toy, tmp_path, monkeypatch):
    """Python exec'd, ``hooklab attribute-context`` in bash, ``scripts/pecore.py`` in-process."""
    from hooklab.demo.session import Runner, compute

    page = compute(Runner("toy", model=toy), TRICKY)
    assert page.result.context_sensitive
    settings = settings_from_form("toy", TRICKY)
    namespace: dict = {}
    exec(compile(python_code(settings), "<demo code>", "exec"), namespace)
    assert summary(namespace["result"]) == summary(page.result)

    out = tmp_path / "cli.json"
    save = f" --save_path {out} --output_format json --noshow_viz"
    shell = (  # the generated line, as a user pastes it, with `hooklab` from this checkout
        f'hooklab() {{ {shlex.quote(sys.executable)} -m hooklab "$@"; }}\n'
        + cli_code(settings).rstrip("\n")
        + save
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["bash", "-c", shell], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    from hooklab.pecore import PecoreResult

    assert summary(PecoreResult.load(out)) == summary(page.result)

    script = shlex.split(cli_code(settings, "script").replace("\\\n", " "))
    assert script[:2] == ["python", "scripts/pecore.py"]
    out2 = tmp_path / "script.json"
    monkeypatch.chdir(ROOT)
    argv = [*script[2:], "--save_path", str(out2), "--output_format", "json", "--noshow_viz"]
    assert main(argv, prog="scripts/pecore.py", default="attribute-context") == 0
    assert summary(PecoreResult.load(out2)) == summary(page.result)


def test_two_sessions_at_once_get_their_own_results(toy):
    from hooklab.demo.session import Runner, compute

    runner = Runner("toy", model=toy)
    forms = [{}, {"input_context_text": "Mary was hungry at noon.",
                  "input_current_text": "Her friends asked her to come"}]  # fmt: skip
    alone = [summary(compute(runner, f).result) for f in forms]
    pages: list = [None, None]

    def work(k: int) -> None:
        try:
            pages[k] = compute(runner, forms[k])
        except Exception as err:  # re-raised below, in the test's thread
            pages[k] = err

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for page in pages:
        if isinstance(page, Exception):
            raise page
    assert [summary(p.result) for p in pages] == alone
    assert alone[0] != alone[1] and pages[0].directory != pages[1].directory


# ---- the page in a real browser ---------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser(tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason='the demo extra is missing: pip install -e ".[demo]"')
    pytest.importorskip("selenium", reason='selenium is missing: pip install -e ".[demo]"')
    chromium = shutil.which("chromium") or CHROMIUM
    driver_path = shutil.which("chromedriver") or CHROMEDRIVER
    if not (Path(chromium).exists() and Path(driver_path).exists()):
        pytest.skip("no browser: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


def _screenshot(browser, tmp_path: Path, name: str) -> None:
    """Save the page as ``name``.png in tmp_path and in $HOOKLAB_DEMO_FIGURES if set."""
    shots = [tmp_path]
    if os.environ.get("HOOKLAB_DEMO_FIGURES"):
        shots.append(Path(os.environ["HOOKLAB_DEMO_FIGURES"]))
    for d in shots:
        d.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(d / f"{name}.png"))


def test_page_in_a_browser(browser, toy, tmp_path):
    """Run the release example, check " hospital" and its top cue "sick", show the code, and
    show an error. Screenshots go to tmp_path (and to $HOOKLAB_DEMO_FIGURES if set)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from hooklab.demo.app import launch

    def shoot(name: str) -> None:
        _screenshot(browser, tmp_path, name)

    start = time.perf_counter()
    port = _free_port()
    demo = launch("toy", model=toy, port=port, block=False)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(f"http://127.0.0.1:{port}/")
        wait.until(ec.element_to_be_clickable((By.ID, "run"))).click()
        target = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#output .hl-target")))
        assert target.get_attribute("data-token") == " hospital"
        top = browser.find_element(By.CSS_SELECTOR, '#cues .hl-cue[data-rank="1"]')
        assert top.get_attribute("data-token") == " sick"
        assert "party" in browser.find_element(By.CSS_SELECTOR, "#cues .hl-alternative").text
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#figure img")))
        assert "pecore_inseq" in browser.find_element(By.ID, "downloads").text
        shoot("default")

        browser.find_element(By.CSS_SELECTOR, "#show-code .label-wrap").click()
        code = wait.until(ec.visibility_of_element_located((By.ID, "code-python")))
        wait.until(lambda _: "pecore(" in code.text)
        assert "hooklab attribute-context" in browser.find_element(By.ID, "code-cli").text
        browser.execute_script(
            "arguments[0].scrollIntoView();", browser.find_element(By.ID, "show-code")
        )
        shoot("show_code")

        box = browser.find_element(By.CSS_SELECTOR, "#field-input_current_text textarea")
        browser.execute_script("window.scrollTo(0, 0);")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        browser.find_element(By.ID, "run").click()
        error = wait.until(ec.visibility_of_element_located((By.ID, "hl-error-message")))
        assert "input_current_text is empty" in error.text and "Traceback" not in error.text
        shoot("error")
    finally:
        demo.close()
    print(f"browser test: {time.perf_counter() - start:.1f} s")


def test_citation_panel_runs_cite():
    """The citation panel's form gives hooklab.cite's result; its errors are cite()'s."""
    import hooklab
    from hooklab.demo.citations import (
        CiteRunner,
        citation_html,
        default_citation_form,
        parse_documents,
    )
    from hooklab.toy_rag import RELEASE_EXAMPLE

    assert parse_documents(" A.\n\n B. \n") == ["A.", "B."]
    rag = hooklab.load("toy-rag", device="cpu")
    runner = CiteRunner(model=rag)
    form = default_citation_form()
    got = runner.run(form)
    assert got == hooklab.cite(rag, RELEASE_EXAMPLE["question"], RELEASE_EXAMPLE["documents"])
    page = citation_html(got)
    assert page.startswith('<div class="hooklab-cite">')
    assert page.count('class="marker"') == len(got.sentences)
    assert page.count("hl-cite-note") == sum(s.reason != "cited" for s in got.sentences)
    with pytest.raises(ValueError, match=r"documents is empty \(\[\]\)"):
        runner.run({**form, "documents": "\n \n"})
    with pytest.raises(ValueError, match="question must be a non-empty string"):
        runner.run({**form, "question": ""})


def test_citation_view_in_a_browser(browser, toy, tmp_path):
    """The citation panel: the toy-rag example's documents, question and answer with the [n]
    markers of hooklab.cite; hovering a selected answer token shows its scores over each
    document and recolours the documents. Screenshot "citation" (as above)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    import hooklab
    from hooklab.demo.app import launch
    from hooklab.toy_rag import RELEASE_EXAMPLE

    rag = hooklab.load("toy-rag", device="cpu")
    want = hooklab.cite(rag, RELEASE_EXAMPLE["question"], RELEASE_EXAMPLE["documents"])
    port = _free_port()
    demo = launch("toy", model=toy, cite_model=rag, port=port, block=False)
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(f"http://127.0.0.1:{port}/")
        panel = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#citations .label-wrap")))
        browser.execute_script("arguments[0].scrollIntoView();", panel)
        panel.click()
        wait.until(ec.element_to_be_clickable((By.ID, "cite-run"))).click()
        view = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "#cite-output .hooklab-cite"))
        )
        text = view.text
        for i, doc in enumerate(RELEASE_EXAMPLE["documents"], 1):
            assert f"[{i}] {doc}" in text
        assert RELEASE_EXAMPLE["question"] in text
        markers = [m.text for m in view.find_elements(By.CSS_SELECTOR, ".marker")]
        assert markers == ["".join(f"[{d + 1}]" for d in c) or "[-]" for c in want.citations]
        (first, *_) = [i for s in want.sentences for i in s.selected]
        token = view.find_element(By.CSS_SELECTOR, f".tok-{first}")
        pop = token.find_element(By.CSS_SELECTOR, ".pop")
        assert not pop.is_displayed()
        browser.execute_script("arguments[0].scrollIntoView();", panel)
        ActionChains(browser).move_to_element(token).perform()
        wait.until(lambda _: pop.is_displayed())
        rows = pop.find_elements(By.CSS_SELECTOR, "tr")
        assert len(rows) == 1 + len(RELEASE_EXAMPLE["documents"])  # header + one per document
        assert view.find_element(By.CSS_SELECTOR, f".docs-{first}").is_displayed()  # :has()
        assert pop.is_displayed()  # still hovered: the coloured documents moved nothing
        _screenshot(browser, tmp_path, "citation")
    finally:
        demo.close()


def test_the_run_button_reports_progress(toy):
    pytest.importorskip("gradio", reason='the demo extra is missing: pip install -e ".[demo]"')
    from hooklab.demo.app import build_app
    from hooklab.demo.session import Runner

    demo = build_app(Runner("toy", model=toy))
    tracked = {fn.fn.__name__: fn.tracks_progress for fn in demo.fns.values()}
    assert tracked["on_run"] and not tracked["on_code"]


def test_runs_share_one_workspace_that_keeps_the_newest_and_is_removed(toy):
    from hooklab.demo.session import Runner

    runner = Runner("toy", model=toy, keep_runs=2)
    runs = [runner.new_directory() for _ in range(3)]
    assert [d.parent for d in runs] == [runner.workspace] * 3
    assert [d.exists() for d in runs] == [False, True, True]
    runner.close()
    assert not runner.workspace.exists()
    with pytest.raises(ValueError, match="keep_runs must be a positive int"):
        Runner("toy", model=toy, keep_runs=0)
