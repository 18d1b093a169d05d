"""One save/load protocol for every output: exact round trips, header, file semantics, errors."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import hooklab
from hooklab.attribution import AttributionOutput, SequenceAttribution
from hooklab.mixing.knockout_output import KnockoutOutput
from hooklab.mixing.output import MixingOutput
from hooklab.output import FORMAT_VERSION, load_output, save_output
from hooklab.output import io as output_io
from hooklab.output.provenance import describe_model
from hooklab.pecore.result import ContextSensitiveToken, Cue, PecoreResult

MODEL = {"name_or_path": "tiny", "architecture": "GPT2LMHeadModel", "config_digest": "abc123"}


# ---- hand-built outputs of every kind ------------------------------------------------------
def attribution() -> AttributionOutput:
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
        parameters={"n_steps": 8, "baseline": None, "inf": math.inf, "nan": math.nan},
        extras={"delta": torch.tensor([1e-3, -2e-3])},
    )
    plain = SequenceAttribution(("<s>", "x", "y"), torch.tensor([1, 2, 3]), 2)
    info = {"method": "saliency", "parameters": {"abs": True, "threshold": -math.inf}}
    return AttributionOutput((seq, plain), info, model=MODEL)


def mixing() -> MixingOutput:
    scores = torch.rand(2, 3, 3, dtype=torch.float64).tril()
    return MixingOutput(
        tokens=("<s>", "a", "b"),
        token_ids=torch.tensor([0, 1, 2]),
        scores=scores,
        layers=(0, 2),
        rollout=scores.cumsum(0),
        parameters={"metric": "cosine", "heads": None, "eps": math.inf},
        target_start=2,
        model=MODEL,
    )


def knockout() -> KnockoutOutput:
    return KnockoutOutput(
        tokens=("<s>", "a", "b", "c"),
        token_ids=torch.tensor([0, 1, 2, 3]),
        target_id=7,
        target_token=" d",
        queries=(3,),
        sources={"cue": (1,), "rest": (0, 2)},
        windows=((0, 1), (1, 2)),
        centres=(0, 1),
        base_probability=0.125,
        probabilities=torch.tensor([[0.0625, 0.25], [0.125, 0.1]], dtype=torch.float64),
        parameters={"window": 2, "target": "predicted"},
        model=MODEL,
    )


def pecore_result() -> PecoreResult:
    cs = ContextSensitiveToken(
        index=1,
        token=" come",
        score=0.7,
        contextless_token=" go",
        input_context_tokens=("George", " was", " sick"),
        input_context_scores=(0.1, math.nan, 0.9),
        cues=(Cue(2, " sick", 0.9),),
    )
    return PecoreResult(
        input_context="George was sick",
        input_current="They asked him to",
        output_current=" stay home",
        input_context_tokens=("George", " was", " sick"),
        output_current_tokens=(" stay", " come"),
        cti_metric="kl_divergence",
        cti_scores=(0.1 / 3, math.nan),
        cti_threshold=math.inf,
        context_sensitive=(cs,),
        parameters={"context_sensitivity_topk": None, "attribution_std_threshold": 1.0},
        model=MODEL,
    )


BUILDERS = {"attribution": attribution, "mixing": mixing, "knockout": knockout}
BUILDERS["pecore"] = pecore_result


def assert_same(a, b) -> None:
    """Exact equality of two outputs: tensors (NaN where NaN), floats, tuples and mappings."""
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        assert_value(getattr(a, f.name), getattr(b, f.name), f.name)


def assert_value(x, y, where: str) -> None:
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and x.dtype == y.dtype, where
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=where)
    elif dataclasses.is_dataclass(x):
        assert_same(x, y)
    elif isinstance(x, float) and math.isnan(x):
        assert isinstance(y, float) and math.isnan(y), where
    elif isinstance(x, (tuple, list)):
        assert type(x) is type(y) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            assert_value(u, v, f"{where}[{i}]")
    elif hasattr(x, "keys"):
        assert list(x) == list(y), where
        for k in x:
            assert_value(x[k], y[k], f"{where}.{k}")
    else:
        assert x == y and type(x) is type(y), f"{where}: {x!r} != {y!r}"


def header(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[output_io.META_KEY])


# ---- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_round_trip_exact_and_header(kind, tmp_path):
    out = BUILDERS[kind]()
    path = out.save(tmp_path / kind)
    assert path == tmp_path / kind and path.is_file()  # exactly the path: no suffix added
    loaded = type(out).load(path)
    assert_same(out, loaded)
    assert_same(out, load_output(path))
    meta = header(path)
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta["hooklab_version"] == hooklab.__version__
    assert meta["kind"] == kind == out.kind
    assert meta["model"] == MODEL
    assert meta["parameters"] == json.loads(json.dumps(out.to_dict()["parameters"]))


def test_non_finite_parameters_come_back_as_floats(tmp_path):
    out = attribution()
    loaded = AttributionOutput.load(out.save(tmp_path / "a.safetensors"))
    params = loaded[0].parameters
    assert params["inf"] == math.inf and math.isnan(params["nan"]) and params["baseline"] is None
    assert loaded.info["parameters"]["threshold"] == -math.inf
    assert header(tmp_path / "a.safetensors")["sequences"][0]["parameters"]["inf"] == "inf"
    result = PecoreResult.load(pecore_result().save(tmp_path / "p"))
    assert result.cti_threshold == math.inf  # not None
    assert math.isnan(result.cti_scores[1]) and math.isnan(
        result.context_sensitive[0].input_context_scores[1]
    )


def test_pecore_json_export_round_trip(tmp_path):
    res = pecore_result()
    path = res.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["format_version"] == 2 and data["kind"] == "pecore" and data["model"] == MODEL
    assert data["cti_threshold"] == "inf" and data["cti_scores"][1] == "nan"
    assert data["parameters"] == {
        "context_sensitivity_topk": None,
        "attribution_std_threshold": 1.0,
    }
    assert "settings" not in data
    assert_same(PecoreResult.load(path), res)
    assert_same(PecoreResult.from_dict({"line": 3, "id": "x", **res.to_dict()}), res)
    assert_same(PecoreResult.from_dict(json.loads(res.to_json())), res)
    with pytest.raises(ValueError, match="format version 2"):
        PecoreResult.from_dict({**res.to_dict(), "format_version": 1})


def test_round_trip_from_models(gpt2, toy, tmp_path):
    out = hooklab.attribute(gpt2, "George was", " sick yesterday", step_scores=["probability"])
    out = dataclasses.replace(out, model=describe_model(gpt2))
    path = out.save(tmp_path / "m.safetensors")
    assert_same(out, AttributionOutput.load(path))
    meta = header(path)
    assert meta["model"]["name_or_path"] and len(meta["model"]["config_digest"]) == 16
    assert meta["parameters"]["method"] == out.info["parameters"]["method"]

    (mix,) = hooklab.mixing.value_zeroing(toy, "George was sick yesterday.")
    mix = dataclasses.replace(mix, model=describe_model(toy))
    assert_same(mix, MixingOutput.load(mix.save(tmp_path / "vz")))
    assert header(tmp_path / "vz")["model"]["name_or_path"] == "toy"

    (ko,) = hooklab.mixing.attention_knockout(
        toy, "George was sick yesterday.", sources={"cue": "sick"}, window=None
    )
    assert_same(ko, KnockoutOutput.load(ko.save(tmp_path / "ko")))

    res = hooklab.pecore.pecore(
        toy, "George was sick yesterday.", "His colleagues asked him to come"
    )
    assert_same(res, PecoreResult.load(res.save(tmp_path / "pecore.safetensors")))


# ---- writing semantics -----------------------------------------------------------------------
def test_refuses_to_overwrite(tmp_path):
    out = knockout()
    path = out.save(tmp_path / "k.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"k\.safetensors.*overwrite=True"):
        mixing().save(path)
    assert path.read_bytes() == before
    mixing().save(path, overwrite=True)
    assert isinstance(load_output(path), MixingOutput)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.safetensors"]


def test_keeps_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = knockout().save(tmp_path / "k")
        json_path = pecore_result().save(tmp_path / "p.json")
        os.umask(0o077)
        private = knockout().save(tmp_path / "private")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(json_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_no_temporary_file_left_after_a_failed_write(tmp_path, monkeypatch):
    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(output_io, "save_file", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        knockout().save(tmp_path / "k")
    assert list(tmp_path.iterdir()) == []
    target = tmp_path / "kept"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        knockout().save(target, overwrite=True)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_save_output_and_directories(tmp_path):
    path = save_output(mixing(), tmp_path / "new" / "dir" / "m.bin")
    assert path.name == "m.bin" and isinstance(load_output(path), MixingOutput)
    with pytest.raises(IsADirectoryError, match="directory"):
        mixing().save(tmp_path)


# ---- loading errors ------------------------------------------------------------------------
def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No saved hooklab output at .*nothing"):
        AttributionOutput.load(tmp_path / "nothing")
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"other\.safetensors.*not a hooklab output"):
        AttributionOutput.load(tmp_path / "other.safetensors")
    (tmp_path / "text.txt").write_text("hello, not a safetensors file at all")
    with pytest.raises(ValueError, match=r"text\.txt.*not a safetensors file"):
        load_output(tmp_path / "text.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json.*not a hooklab output"):
        load_output(tmp_path / "bad.json")
    (tmp_path / "mix.json").write_text(json.dumps(mixing().to_dict()))
    with pytest.raises(
        ValueError, match=r"mix\.json.*only a PECoRe result .* loads from its JSON export"
    ):
        load_output(tmp_path / "mix.json")


def test_load_of_another_kind_names_both(tmp_path):
    path = knockout().save(tmp_path / "k")
    with pytest.raises(ValueError, match=r"'knockout' output, not a 'mixing' output"):
        MixingOutput.load(path)
    with pytest.raises(ValueError, match=r"'knockout' output, not a 'pecore' output"):
        PecoreResult.load(path)


def test_load_of_another_format_version(tmp_path):
    meta = {"format_version": 1, "kind": "mixing"}
    save_file({"x": torch.zeros(1)}, tmp_path / "v1", metadata={"hooklab": json.dumps(meta)})
    with pytest.raises(ValueError, match=r"v1.*format version 1.*reads version 2"):
        load_output(tmp_path / "v1")
    # version-1 mixing files used their own header entry
    save_file({"x": torch.zeros(1)}, tmp_path / "m1", metadata={"hooklab_mixing": json.dumps(meta)})
    with pytest.raises(ValueError, match="format version 1"):
        MixingOutput.load(tmp_path / "m1")


def test_shape_checks():
    with pytest.raises(ValueError, match="step, key_pos"):
        SequenceAttribution(("a", "b", "c"), torch.tensor([1, 2, 3]), 1, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="target_start"):
        SequenceAttribution(("a", "b"), torch.tensor([1, 2]), 0)


# ---- immutable parameters ------------------------------------------------------------------
def test_parameters_are_immutable_per_output():
    shared = {"n_steps": 8, "options": {"abs": True}, "layers": [0, 1]}
    a = SequenceAttribution(("<s>", "x"), torch.tensor([1, 2]), 1, parameters=shared)
    b = SequenceAttribution(("<s>", "y"), torch.tensor([1, 3]), 1, parameters=shared)
    out = AttributionOutput((a, b), {"parameters": shared})
    with pytest.raises(TypeError):
        out[0].parameters["n_steps"] = 1
    with pytest.raises(TypeError):
        out[0].parameters["options"]["abs"] = False
    with pytest.raises(AttributeError):
        out[0].parameters["layers"].append(2)
    shared["n_steps"] = 99  # the caller's dict changes: no output sees it
    shared["options"]["abs"] = False
    assert out[0].parameters["n_steps"] == 8 and out[1].parameters["options"]["abs"] is True
    assert out.parameters["n_steps"] == 8
    for other in (mixing(), knockout(), pecore_result()):
        with pytest.raises(TypeError):
            other.parameters["x"] = 1
        with pytest.raises(TypeError):
            other.model["name_or_path"] = "other"
