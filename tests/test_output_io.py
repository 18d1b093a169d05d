"""Save -> load round trip of attribution outputs."""

from __future__ import annotations

import math

import pytest
import torch

import hooklab
from hooklab.output.sequence import AttributionOutput, SequenceAttribution


def _example() -> AttributionOutput:
    attr = torch.randn(2, 5, 3)
    attr[0, 3:] = math.nan
    attr[1, 4:] = math.nan
    seq = SequenceAttribution(
        tokens=("<s>", "A", " b", " c", " d"),
        token_ids=torch.tensor([1, 5, 6, 7, 8]),
        target_start=3,
        attributions=attr,
        step_scores={"probability": torch.tensor([0.25, 0.5])},
        method="saliency",
        parameters={"n_steps": 8, "baseline": None, "inf": math.inf},
        extras={"delta": torch.tensor([1e-3, -2e-3])},
    )
    plain = SequenceAttribution(("<s>", "x", "y"), torch.tensor([1, 2, 3]), 2)
    return AttributionOutput((seq, plain), {"model": "tiny", "elapsed_s": 0.5})


def _same(a: AttributionOutput, b: AttributionOutput) -> None:
    assert a.info == b.info
    for x, y in zip(a, b, strict=True):
        assert x.tokens == y.tokens and x.target_start == y.target_start
        assert torch.equal(x.token_ids, y.token_ids)
        if x.attributions is None:
            assert y.attributions is None
        else:
            assert torch.equal(x.attributions.isnan(), y.attributions.isnan())
            assert torch.equal(x.attributions.nan_to_num(), y.attributions.nan_to_num())
        for name in x.step_scores:
            assert torch.equal(x.step_scores[name], y.step_scores[name])
        for name in x.extras:
            assert torch.equal(x.extras[name], y.extras[name])
        assert x.method == y.method


def test_round_trip_exact(tmp_path):
    out = _example()
    path = out.save(tmp_path / "attr")
    assert path.suffix == ".safetensors"
    loaded = AttributionOutput.load(path)
    _same(AttributionOutput(out.sequences, loaded.info), loaded)
    assert loaded[0].parameters == {"n_steps": 8, "baseline": None, "inf": "inf"}


def test_refuses_to_overwrite(tmp_path):
    out = _example()
    path = out.save(tmp_path / "a.safetensors")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        out.save(path)
    out.save(path, overwrite=True)


def test_round_trip_from_model(gpt2, tmp_path):
    out = hooklab.attribute(gpt2, "George was", " sick yesterday", step_scores=["probability"])
    loaded = AttributionOutput.load(out.save(tmp_path / "m"))
    _same(out, loaded)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No saved"):
        AttributionOutput.load(tmp_path / "nothing")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not a hooklab output"):
        AttributionOutput.load(tmp_path / "other.safetensors")


def test_shape_checks():
    with pytest.raises(ValueError, match="step, key_pos"):
        SequenceAttribution(("a", "b", "c"), torch.tensor([1, 2, 3]), 1, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="target_start"):
        SequenceAttribution(("a", "b"), torch.tensor([1, 2]), 0)
