"""The dataset modes as test cases: their example lines, an in-process run and a child process.

``KINDS`` names them: ``"pecore"`` (:mod:`hooklab.pecore.dataset`) and ``"attribute"``
(:mod:`hooklab.attribute_dataset`, run in the child through the documented command). The child
and the in-process run use the same options, one example per batch and one thread, so that
their records match byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("pecore", "attribute")
#: the attribution options of both runs (the command's defaults, but for the generation length)
ATTRIBUTE = {"method": "saliency", "step_scores": ["probability"]}
MAX_NEW_TOKENS = 4
CONTEXT = "George was sick yesterday."
CURRENTS = ["His colleagues asked him", "Her friends told her", "They asked him", "We saw"]
CHILD = f"""
import sys
import torch
torch.set_num_threads(1)  # as in the test process (conftest), so results match bit for bit
kind, model_dir, data, out = sys.argv[1:5]
if kind == "attribute":  # the documented command, under torchrun or alone
    from hooklab.cli import main
    sys.exit(main(["attribute", "--model_name_or_path", model_dir, "--device", "cpu", "--input",
                   data, "--output", out, "--batch_size", "1", "--step_scores", "probability",
                   "--max_new_tokens", "{MAX_NEW_TOKENS}", "--noshow_progress"]))
import hooklab
from hooklab import distributed
from hooklab.pecore import PecoreOptions
from hooklab.pecore.dataset import run_dataset
with distributed.process_group() as (rank, world_size):
    model = hooklab.load(model_dir, device="cpu")
    run_dataset(model, data, out, PecoreOptions(), batch_size=1, show_progress=False,
                rank=rank, world_size=world_size)
"""


def examples(kind: str, n: int) -> list[dict]:
    """``n`` input lines of a dataset mode (attribution: every third one generated)."""
    if kind == "pecore":
        base = {"input_context_text": CONTEXT, "output_current_text": "to come to the hospital."}
        return [{**base, "input_current_text": f"{CURRENTS[i % 4]} ({i})"} for i in range(n)]
    lines = [{"prompt": f"{CONTEXT} {CURRENTS[i % 4]} ({i})", "id": f"ex{i}"} for i in range(n)]
    for i, line in enumerate(lines):
        if i % 3:
            line["target"] = " to come to the hospital."
    return lines


def write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def run_in_process(kind: str, model, data: Path, out: Path, **kwargs) -> dict:
    """The single-process run the child's output must equal."""
    kwargs = {"batch_size": 1, "show_progress": False, **kwargs}
    if kind == "pecore":
        from hooklab.pecore import PecoreOptions
        from hooklab.pecore.dataset import run_dataset

        return run_dataset(model, data, out, PecoreOptions(), **kwargs)
    from hooklab.attribute_dataset import run_dataset

    options = {**ATTRIBUTE, "generation_kwargs": {"max_new_tokens": MAX_NEW_TOKENS}, **kwargs}
    return run_dataset(model, data, out, **options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, tmp_path: Path, model_dir, data: Path, out: Path, nproc: int = 1):
    """Start the child: alone (``nproc=1``) or under ``torchrun --nproc_per_node nproc``."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable]
    if nproc > 1:
        torchrun = Path(sys.executable).with_name("torchrun")
        args = [str(torchrun), "--nproc_per_node", str(nproc), "--master_port", str(_free_port())]
    args += [str(script), kind, str(model_dir), str(data), str(out)]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def finish(proc: subprocess.Popen, timeout: float = 180) -> None:
    """Wait for the child; fail with its output unless it exits 0."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, out.decode()[-6000:]


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child and everything it started (torchrun's ranks), mid-record or not."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
