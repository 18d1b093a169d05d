"""Shared fixtures: tiny models built from configs and saved locally, offline always."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

# Tiny matmuls are far slower with several threads on a loaded 2-core machine; pytest-xdist
# already runs one worker per core.
torch.set_num_threads(1)

TEXTS = [
    "George was sick yesterday. His colleagues asked him to come to the hospital.",
    "Mary was hungry at noon. Her friends asked her to come to the restaurant.",
    "It rained all morning. She took her umbrella to the office.",
    "The quick brown fox jumps over the lazy dog.",
]


def _tokenizer(bos: str, eos: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys([eos, bos]))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=eos, pad_token=eos,
        add_bos_token=True,  # tokenizer(text) starts with BOS, so hooklab prepends it
    )  # fmt: skip


def _randomise_biases(model, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def save_tiny(model, tok, path, seed: int):
    """Give ``model`` non-zero random biases, save it with its tokenizer; return ``path``."""
    _randomise_biases(model, seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_gpt2(path, seed: int = 0):
    """A 2-layer GPT-2 with non-zero biases, saved to ``path``; returns the path."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = _tokenizer("<|endoftext|>", "<|endoftext|>")
    cfg = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=4,
        n_positions=64,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = GPT2LMHeadModel(cfg).eval()
    return save_tiny(model, tok, path, seed)


def build_llama(path, seed: int = 0):
    """A 2-layer Llama with grouped KV heads and attention biases, saved to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = _tokenizer("<s>", "</s>")
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        vocab_size=len(tok),
        attention_bias=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    return save_tiny(model, tok, path, seed)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return build_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return build_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def gpt2(gpt2_dir):
    import hooklab

    return hooklab.load(gpt2_dir, device="cpu")


@pytest.fixture(scope="session")
def llama(llama_dir):
    import hooklab

    return hooklab.load(llama_dir, device="cpu")


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny(request):
    """Each tiny model in turn."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def toy():
    import hooklab

    return hooklab.load("toy", device="cpu")
