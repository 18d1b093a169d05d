"""The README's Python examples run as written, on the toy model, offline."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["out"][0].target_tokens[:3] == (" to", " the", " hospital")
    assert [c.token for c in namespace["result"].context_sensitive] == [" hospital"]
    assert namespace["mix"].scores.ndim == 3


def test_ci_runs_the_readme_test_command():
    lines = README.read_text(encoding="utf-8").splitlines()
    test_command = lines[lines.index("```bash") + 2]
    assert test_command.startswith("python -m pytest")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] == test_command


def test_architecture_section_names_real_modules():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"hooklab/[\w/]*\.py|hooklab/\w+/", section))
    named |= {f"hooklab/{m}" for m in re.findall(r"\s(\w+\.py)", section)}
    assert len(named) >= 15
    missing = [p for p in sorted(named) if not (README.parent / p).exists()]
    assert not missing, f"the README's architecture names modules that do not exist: {missing}"
