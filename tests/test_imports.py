"""Start-up: ``import hooklab`` and flag checking (every subcommand's) import neither
TransformerLens, transformers, matplotlib, pandas nor datasets; the PECoRe command imports
matplotlib only for a figure.

Each check runs a fresh interpreter (the test process has imported everything already) and
reads its ``sys.modules``; no timings are asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PYTHONPATH": str(ROOT),
    "MPLBACKEND": "Agg",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
HEAVY = ("transformer_lens", "transformers", "matplotlib", "pandas", "datasets")


def _loaded_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; return which of HEAVY it left in sys.modules."""
    report = f"import json, sys; print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        capture_output=True, text=True, env=ENV, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_hooklab_imports_no_heavy_library():
    assert _loaded_after("import hooklab") == dict.fromkeys(HEAVY, False)


def test_public_names_resolve_without_heavy_libraries():
    code = "import hooklab\nfor name in hooklab.__all__: getattr(hooklab, name)"
    assert _loaded_after(code) == dict.fromkeys(HEAVY, False)


def test_cli_checks_flags_before_importing_heavy_libraries():
    code = (
        "from hooklab.cli import main\n"
        "assert main(['attribute-context', '--attribution_methd', 'saliency']) == 2\n"
        "assert main(['attribute-context', '--help']) == 0"
    )
    assert _loaded_after(code) == dict.fromkeys(HEAVY, False)


def test_pecore_command_imports_matplotlib_only_for_a_figure():
    code = (
        "from hooklab.cli import main\n"
        "assert main(['attribute-context', '--show_viz', 'False']) == 0"
    )
    loaded = _loaded_after(code)
    assert loaded["transformer_lens"] and not loaded["matplotlib"]


def test_every_command_checks_flags_before_importing_heavy_libraries():
    """Each subcommand's --help and a misspelt flag (exit status 2) load no heavy library:
    a cold command pays for TransformerLens only once a model is needed."""
    code = (
        "import contextlib, io\n"
        "from hooklab.cli import commands, main\n"
        "for name in commands():\n"
        "    with contextlib.redirect_stdout(io.StringIO()), "
        "contextlib.redirect_stderr(io.StringIO()):\n"
        "        assert main([name, '--help']) == 0, name\n"
        "        assert main([name, '--no_such_flag', '1']) == 2, name"
    )
    assert _loaded_after(code) == dict.fromkeys(HEAVY, False)
