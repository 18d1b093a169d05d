"""Tokenizer conventions: BOS as the model's own tokenizer adds it, chat templates and special
tokens, tokens added beyond the configured vocabulary, several EOS ids (zoo checkpoints)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hooklab
from hooklab import zoo
from hooklab.encoding import encode
from hooklab.inputs import bos_token_id, encode_prompt
from hooklab.mixing import attention_knockout, value_zeroing
from hooklab.pecore import pecore
from hooklab.pecore.encode import encode_example
from hooklab.pecore.options import PecoreOptions

TEXT = "George was sick yesterday. His colleagues asked him to come"
CHAT = "<|im_start|>user\n{context} {current}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    """Build (once) and return the path of a zoo checkpoint by family, with or without chat."""
    built = {}

    def get(name: str, chat: bool = False):
        if (name, chat) not in built:
            path = tmp_path_factory.mktemp(f"{name}{'_chat' if chat else ''}")
            built[name, chat] = zoo.build(name, path, chat=chat)
        return built[name, chat]

    return get


def _hf_greedy(model, ids: list[int], n: int) -> list[int]:
    """Hugging Face greedy ``generate`` from ``ids``: the new tokens, the final EOS dropped."""
    hf = model.original_model
    config = hf.generation_config
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    out = hf.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=config.pad_token_id,
    )[0, len(ids) :].tolist()
    return out[:-1] if out and out[-1] in eos else out


def test_no_bos_tokenizer_gets_no_bos(zoo_dir):
    """Qwen-style tokenizer without a BOS token: prompts are exactly ``tokenizer(text)`` (no
    EOS standing in for BOS) and greedy generation equals Hugging Face ``generate``."""
    path = zoo_dir("qwen2")
    model = hooklab.load(path, device="cpu")
    hf_ids = AutoTokenizer.from_pretrained(path)(TEXT)["input_ids"]
    assert bos_token_id(model) is None
    assert model.tokenizer.bos_token_id is not None  # TransformerLens' copy has one: not used
    assert encode_prompt(model, TEXT) == hf_ids
    out = hooklab.generate(model, TEXT, max_new_tokens=8)
    assert out.prompt_ids[0] == hf_ids
    assert out.output_ids[0] == _hf_greedy(model, hf_ids, 8)
    seq = hooklab.attribute(model, TEXT, generation_kwargs={"max_new_tokens": 2})[0]
    assert seq.token_ids[: seq.target_start].tolist() == hf_ids
    with pytest.raises(ValueError, match="has no BOS token"):
        encode_prompt(model, TEXT, prepend_bos=True)
    with pytest.raises(ValueError, match="no bos token"):  # not TransformerLens' stand-in
        hooklab.attribute(model, TEXT, " to", method="integrated_gradients", baseline="bos")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_bos_models_get_one_bos(zoo_dir, family):
    path = zoo_dir(family)
    model = hooklab.load(path, device="cpu")
    tok = AutoTokenizer.from_pretrained(path)
    hf_ids = tok(TEXT)["input_ids"]
    assert hf_ids[0] == tok.bos_token_id and hf_ids.count(tok.bos_token_id) == 1
    assert encode_prompt(model, TEXT) == hf_ids
    assert encode_prompt(model, tok.bos_token + TEXT) == hf_ids  # never doubled
    assert encode_prompt(model, TEXT, prepend_bos=False) == hf_ids[1:]
    out = hooklab.generate(model, TEXT, max_new_tokens=6)
    assert out.output_ids[0] == _hf_greedy(model, hf_ids, 6)


def test_prepend_bos_is_honoured(zoo_dir, tmp_path):
    """A tokenizer with a BOS token it does not add (as GPT-2's): none by default, one with
    ``prepend_bos=True``, through attribute, the mixing methods and PECoRe."""
    zoo.tokenizer(bos=True).save_pretrained(tmp_path)  # the zoo's, without adds_bos
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = hooklab.load(zoo_dir("llama"), tokenizer=tokenizer, device="cpu")
    bos = bos_token_id(model)
    plain = model.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert encode_prompt(model, TEXT) == plain
    assert encode_prompt(model, TEXT, prepend_bos=True) == [bos, *plain]
    for prepend, expected in ((None, plain), (False, plain), (True, [bos, *plain])):
        enc = encode(model, [TEXT], [" to the"], prepend_bos=prepend)
        assert enc.prefixes[0] == expected
        seq = hooklab.attribute(model, TEXT, " to the", prepend_bos=prepend)[0]
        assert seq.token_ids[: seq.target_start].tolist() == expected
        assert seq.parameters["prepend_bos"] is prepend
        (vz,) = value_zeroing(model, TEXT, targets="", layers=0, prepend_bos=prepend)
        assert vz.token_ids.tolist() == expected
        (ko,) = attention_knockout(model, TEXT, window=None, prepend_bos=prepend)
        assert ko.token_ids.tolist() == expected
        opts = PecoreOptions(prepend_bos=prepend)
        ex = encode_example(
            model, opts, input_context_text="George was sick yesterday.",
            input_current_text="His colleagues asked him to come", output_current_text="to",
        )  # fmt: skip
        assert (ex.ctx_prompt[0] == bos) is (prepend is True)
        assert (ex.noctx_prompt[0] == bos) is (prepend is True)
    with pytest.raises(TypeError, match="prepend_bos"):  # a TypeCheckError under jaxtyping
        PecoreOptions(prepend_bos="yes")


def test_special_tokens_in_text_stay_single_tokens(zoo_dir):
    model = hooklab.load(zoo_dir("qwen2", chat=True), device="cpu")
    start, end = (model.tokenizer.convert_tokens_to_ids(t) for t in zoo.CHAT_TOKENS)
    assert (start, end) == (zoo.VOCAB, zoo.VOCAB + 1)
    ids = encode_prompt(model, "<|im_start|>user\nGeorge was sick<|im_end|>")
    assert ids[0] == start and ids[-1] == end and ids.count(start) == ids.count(end) == 1
    assert (
        "".join(hooklab.inputs.str_tokens(model, ids))
        == "<|im_start|>user\nGeorge was sick<|im_end|>"
    )


def test_messages_use_the_chat_template(zoo_dir):
    path = zoo_dir("qwen2", chat=True)
    model = hooklab.load(path, device="cpu")
    tok = AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": "George was sick yesterday."}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    hf_ids = tok(text, add_special_tokens=False)["input_ids"]
    out = hooklab.attribute(model, messages=messages, targets=" to the", method="saliency")
    seq = out[0]
    assert seq.token_ids[: seq.target_start].tolist() == hf_ids
    two = hooklab.attribute(model, messages=[messages, messages], targets=[" to", " to"])
    assert len(two) == 2 and two[1].token_ids.tolist() == two[0].token_ids.tolist()
    with pytest.raises(ValueError, match="exclusive"):
        hooklab.attribute(model, TEXT, messages=messages)
    with pytest.raises(TypeError, match="role"):
        hooklab.attribute(model, messages=[{"content": "no role"}])
    no_template = hooklab.load(zoo_dir("qwen2"), device="cpu")
    with pytest.raises(ValueError, match="no chat template.*tokenizer.chat_template"):
        hooklab.attribute(no_template, messages=messages)


def test_pecore_with_chat_markers_in_the_template(zoo_dir):
    model = hooklab.load(zoo_dir("qwen2", chat=True), device="cpu")
    nc = "<|im_start|>user\n{current}<|im_end|>\n<|im_start|>assistant\n"
    opts = PecoreOptions(
        input_template=CHAT, contextless_input_current_text=nc,
        decoder_input_output_separator="", context_sensitivity_std_threshold=None,
        context_sensitivity_topk=1,
    )  # fmt: skip
    context, current = "George was sick yesterday.", "His colleagues asked him to come"
    ex = encode_example(
        model, opts, input_context_text=context, input_current_text=current,
        output_current_text="to the hospital",
    )  # fmt: skip
    start = model.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ex.ctx_prompt[0] == start and ex.noctx_prompt[0] == start  # no BOS: Qwen-style
    assert ex.ctx_prompt.count(start) == 2
    context_ids = [ex.ctx_prompt[p] for p in ex.context_positions]
    assert model.tokenizer.decode(context_ids) == context
    res = pecore(model, context, current, output_current_text="to the hospital", options=opts)
    assert len(res.context_sensitive) == 1
    assert "".join(res.input_context_tokens) == context


def _with_added_tokens(src, dst, resize: bool):
    """Save a copy of checkpoint ``src`` to ``dst`` with two special tokens added to its
    tokenizer and (with ``resize``) its embedding grown to a multiple of 64 rows."""
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src)
    tok.add_special_tokens({"additional_special_tokens": ["<tool>", "</tool>"]})
    if resize:
        model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


def test_added_tokens_beyond_the_configured_vocabulary(zoo_dir, tmp_path):
    path = _with_added_tokens(zoo_dir("llama"), tmp_path / "resized", resize=True)
    model = hooklab.load(path, device="cpu")
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == zoo.VOCAB + 2 and model.cfg.d_vocab == 448  # padding rows beyond both
    prompt = "<tool>George was sick</tool> yesterday."
    ids = encode_prompt(model, prompt)
    assert tok.convert_tokens_to_ids("<tool>") in ids and max(ids) == zoo.VOCAB + 1
    seq = hooklab.attribute(model, prompt, " His", method="saliency", step_scores=["probability"])
    assert torch.isfinite(seq[0].step_scores["probability"]).all()
    rea = hooklab.attribute(model, prompt, " His", method="reagent", num_probes=2,
                            max_probe_steps=3, seed=0)  # fmt: skip
    assert rea[0].attributions.shape[-1] == len(ids) + 1
    broken = _with_added_tokens(zoo_dir("llama"), tmp_path / "not_resized", resize=False)
    with pytest.raises(ValueError, match=r"2 added tokens.*resize_token_embeddings"):
        hooklab.load(broken, device="cpu")


def test_generation_stops_at_any_eos_id(zoo_dir, tmp_path):
    """``generation_config.eos_token_id`` as a list (Llama 3's two): greedy generation stops
    at either, as Hugging Face ``generate`` does."""
    path = zoo_dir("llama")
    model = hooklab.load(path, device="cpu")
    free = hooklab.generate(model, TEXT, max_new_tokens=12, stop_at_eos=False).output_ids[0]
    k = next(i for i in range(2, len(free)) if free[i] not in free[:i])  # a fresh token
    hf = AutoModelForCausalLM.from_pretrained(path)
    hf.generation_config.eos_token_id = [hf.generation_config.eos_token_id, free[k]]
    hf.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp_path)
    two = hooklab.load(tmp_path, device="cpu")
    out = hooklab.generate(two, TEXT, max_new_tokens=12)
    assert out.output_ids[0] == free[:k]
    assert out.output_ids[0] == _hf_greedy(two, out.prompt_ids[0], 12)
    assert hooklab.generate(two, TEXT, max_new_tokens=12, use_cache=False).output_ids == [free[:k]]


def test_cli_messages_flag_uses_the_chat_template(zoo_dir, tmp_path, capsys):
    from hooklab.cli import main

    path = zoo_dir("qwen2", chat=True)
    messages = [{"role": "user", "content": "George was sick yesterday."}]
    file = tmp_path / "chat.json"
    file.write_text(json.dumps(messages))
    model = hooklab.load(path, device="cpu")
    expected = hooklab.attribute(model, messages=messages, targets=" to the", method="saliency")[0]
    for given in (str(file), json.dumps(messages)):
        out = tmp_path / "out.safetensors"
        argv = ["attribute", "--model_name_or_path", str(path), "--messages", given,
                "--target", " to the", "--figure_path", "none", "--noshow",
                "--save_path", str(out), "--overwrite"]  # fmt: skip
        assert main(argv) == 0
        (seq,) = hooklab.load_output(out).sequences
        assert seq.token_ids.tolist() == expected.token_ids.tolist()
        torch.testing.assert_close(seq.attributions, expected.attributions, equal_nan=True)
    for bad, message in (("nofile.json", "neither an existing file nor JSON"),
                         ("[{\"content\": \"x\"}]", "role")):  # fmt: skip
        assert main(["attribute", "--model_name_or_path", str(path), "--messages", bad]) == 2
        assert message in capsys.readouterr().err
    assert (
        main(
            [
                "attribute",
                "--model_name_or_path",
                str(path),
                "--messages",
                str(file),
                "--prompt",
                "x",
            ]
        )
        == 2
    )
    assert "exclusive" in capsys.readouterr().err
