"""Model loading from every source, and its errors."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import hooklab


def test_local_dir_matches_hf(gpt2_dir, gpt2):
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    ids = torch.tensor([hooklab.encode_prompt(gpt2, "George was sick")])
    with torch.no_grad():
        assert_close(gpt2(ids, prepend_bos=False), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_raw_mode_keeps_true_value_vectors(gpt2_dir, gpt2):
    """hook_v must carry x W_V + b_V (value bias not folded away)."""
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    attn = hf.transformer.h[0].attn
    assert attn.c_attn.bias.abs().sum() > 0
    ids = torch.tensor([hooklab.encode_prompt(gpt2, "George was sick")])
    store = {}
    with torch.no_grad():
        _, cache = gpt2.run_with_cache(ids, prepend_bos=False)
        x = hf.transformer.h[0].ln_1(hf.transformer.wte(ids) + hf.transformer.wpe.weight[:4])
        store["v"] = attn.c_attn(x)[..., 2 * 32 :].reshape(1, 4, 4, 8)
    assert_close(cache[hooklab.hook_name("v", 0)], store["v"], atol=1e-5, rtol=1e-5)


def test_in_memory_model_is_not_modified(gpt2_dir):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    model = hooklab.load(hf, tokenizer=tok, device="cpu")
    ids = torch.tensor([hooklab.encode_prompt(model, "George was sick")])
    with torch.no_grad():
        assert_close(model(ids, prepend_bos=False), hf(ids).logits, atol=1e-5, rtol=1e-5)
    for k, v in hf.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="tokenizer"):
        hooklab.load(hf)


def test_dtype_option(gpt2_dir):
    model = hooklab.load(gpt2_dir, device="cpu", dtype="float64")
    assert next(model.parameters()).dtype == torch.float64
    with pytest.raises(ValueError, match="float32"):
        hooklab.load(gpt2_dir, dtype="float13")


def test_missing_local_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hooklab.load("./no/such/model")


def test_dir_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hooklab.load(tmp_path)


def test_offline_hub_name_says_pass_local_dir():
    with pytest.raises(OSError, match="local directory") as err:
        hooklab.load("gpt2-hooklab-test-model-that-is-not-cached")
    assert "gpt2-hooklab-test-model-that-is-not-cached" in str(err.value)


def test_bad_device():
    with pytest.raises(ValueError, match="device"):
        hooklab.load("toy", device="gpu0")
