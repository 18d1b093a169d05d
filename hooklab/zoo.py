"""Tiny random checkpoints of the model families researchers use, built offline from configs.

Each family is one entry of :data:`FAMILIES`: the Hugging Face config and model classes and the
config fields that make the checkpoint tiny (2 layers, hidden size 64) while keeping what makes
the family what it is (parallel attention and MLP, norms after attention, grouped key/value
heads, rotary or learned positions, fused projections...). :func:`build` trains a small
byte-level BPE tokenizer (no download), builds the model, gives every bias and norm weight
random non-zero values (so that a method that drops a bias or a norm is caught) and saves both
to a directory that :func:`hooklab.load` reads.

The test matrix (``tests/test_zoo.py``) and ``python -m tests.zoo_matrix --markdown`` (which
prints the README's "Supported models" table) run every feature on every family built here.

Example:
    >>> import hooklab, tempfile
    >>> from hooklab.zoo import build
    >>> model = hooklab.load(build("gpt_neox", tempfile.mkdtemp()))  # a tiny Pythia
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: Sentences the tokenizer is trained on (and the zoo tests use as prompts).
TEXTS = (
    "George was sick yesterday. His colleagues asked him to come to the hospital.",
    "Mary was hungry at noon. Her friends asked her to come to the restaurant.",
    "It rained all morning. She took her umbrella to the office.",
    "The quick brown fox jumps over the lazy dog.",
    "Der Tisch war alt. Er war kaputt. Le chat dort sur la table.",
)
HIDDEN, LAYERS, HEADS, VOCAB, WINDOW = 64, 2, 4, 400, 128


@dataclass(frozen=True)
class Family:
    """One model family: how to build its tiny checkpoint.

    Attributes:
        name: the family's short name (``model_type`` in most cases).
        config: ``transformers`` config class name.
        model: ``transformers`` model class name (a causal LM or a seq2seq LM).
        fields: config fields that make it tiny (sizes, positions, biases).
        encoder_decoder: whether it is an encoder–decoder model.
        bos: whether its tokenizer has a BOS token (False: Qwen, T5, Marian, Pegasus).
        template: what its tokenizer adds around a text (a ``tokenizers`` template, e.g.
            ``"$A </s>"`` for T5's EOS, ``"<s> $A </s>"`` for BART's); None adds nothing.
        label: the name shown in tables (e.g. "GPT-NeoX (Pythia)").
    """

    name: str
    config: str
    model: str
    fields: dict[str, Any] = field(default_factory=dict)
    encoder_decoder: bool = False
    bos: bool = True
    template: str | None = None
    label: str = ""


def _llama_like(**extra) -> dict[str, Any]:
    return {
        "hidden_size": HIDDEN,
        "intermediate_size": 2 * HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": 2,
        "max_position_embeddings": WINDOW,
        "tie_word_embeddings": False,
        **extra,
    }


def _seq2seq(**extra) -> dict[str, Any]:
    return {
        "d_model": HIDDEN,
        "encoder_layers": LAYERS,
        "decoder_layers": LAYERS,
        "encoder_attention_heads": HEADS,
        "decoder_attention_heads": HEADS,
        "encoder_ffn_dim": 2 * HIDDEN,
        "decoder_ffn_dim": 2 * HIDDEN,
        "max_position_embeddings": WINDOW,
        **extra,
    }


_DECODERS = [
    Family(
        "gpt2", "GPT2Config", "GPT2LMHeadModel",
        {"n_layer": LAYERS, "n_embd": HIDDEN, "n_head": HEADS, "n_positions": WINDOW},
        label="GPT-2",
    ),
    Family(
        "gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM",
        {"hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
         "num_attention_heads": HEADS, "max_position_embeddings": WINDOW, "rotary_pct": 0.25,
         "use_parallel_residual": True, "tie_word_embeddings": False},
        label="GPT-NeoX (Pythia)",
    ),
    Family("llama", "LlamaConfig", "LlamaForCausalLM",
           _llama_like(attention_bias=True, mlp_bias=True), label="Llama"),
    Family("mistral", "MistralConfig", "MistralForCausalLM", _llama_like(), label="Mistral"),
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", _llama_like(), bos=False,
           label="Qwen 2"),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", _llama_like(head_dim=16), bos=False,
           label="Qwen 3"),
    Family("gemma", "GemmaConfig", "GemmaForCausalLM", _llama_like(head_dim=16),
           label="Gemma"),
    Family("gemma2", "Gemma2Config", "Gemma2ForCausalLM",
           _llama_like(head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=16),
           label="Gemma 2"),
    Family("gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM",
           _llama_like(head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=16),
           label="Gemma 3 (text)"),
    Family(
        "phi", "PhiConfig", "PhiForCausalLM",
        {"hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": LAYERS,
         "num_attention_heads": HEADS, "max_position_embeddings": WINDOW,
         "partial_rotary_factor": 0.5},
        label="Phi",
    ),
    Family("phi3", "Phi3Config", "Phi3ForCausalLM", _llama_like(), label="Phi-3"),
    Family(
        "opt", "OPTConfig", "OPTForCausalLM",
        {"hidden_size": HIDDEN, "ffn_dim": 2 * HIDDEN, "num_hidden_layers": LAYERS,
         "num_attention_heads": HEADS, "max_position_embeddings": WINDOW,
         "word_embed_proj_dim": HIDDEN},
        label="OPT",
    ),
    Family(
        "gptj", "GPTJConfig", "GPTJForCausalLM",
        {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_positions": WINDOW,
         "rotary_dim": 8, "tie_word_embeddings": False},
        label="GPT-J",
    ),
    Family(
        "bloom", "BloomConfig", "BloomForCausalLM",
        {"hidden_size": HIDDEN, "n_layer": LAYERS, "n_head": HEADS},
        label="BLOOM",
    ),
    Family("olmo2", "Olmo2Config", "Olmo2ForCausalLM", _llama_like(), label="OLMo 2"),
    Family(
        "falcon", "FalconConfig", "FalconForCausalLM",
        {"hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
         "max_position_embeddings": WINDOW, "bias": True, "parallel_attn": True,
         "new_decoder_architecture": False, "multi_query": True, "alibi": False},
        label="Falcon",
    ),
    Family(
        "gpt_bigcode", "GPTBigCodeConfig", "GPTBigCodeForCausalLM",
        {"n_layer": LAYERS, "n_embd": HIDDEN, "n_head": HEADS, "n_positions": WINDOW,
         "multi_query": True},
        label="GPT-BigCode",
    ),
    Family("starcoder2", "Starcoder2Config", "Starcoder2ForCausalLM",
           _llama_like(use_bias=True, sliding_window=None), label="StarCoder 2"),
    Family("granite", "GraniteConfig", "GraniteForCausalLM",
           _llama_like(attention_bias=True, mlp_bias=True, embedding_multiplier=2.0,
                       residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=2.0),
           label="Granite"),
    Family("stablelm", "StableLmConfig", "StableLmForCausalLM",
           _llama_like(use_qkv_bias=True, partial_rotary_factor=0.25), label="StableLM"),
]  # fmt: skip

_EOS = "$A </s>"  # what Marian, T5, Pegasus, mBART and M2M100 tokenizers add (no language codes)
_ENCODER_DECODERS = [
    Family("marian", "MarianConfig", "MarianMTModel", _seq2seq(), True, False, _EOS,
           label="Marian"),
    Family("bart", "BartConfig", "BartForConditionalGeneration", _seq2seq(), True,
           template="<s> $A </s>", label="BART"),
    Family("mbart", "MBartConfig", "MBartForConditionalGeneration", _seq2seq(), True,
           template=_EOS, label="mBART"),
    Family("m2m_100", "M2M100Config", "M2M100ForConditionalGeneration", _seq2seq(), True,
           template=_EOS, label="M2M100 / NLLB"),
    Family("pegasus", "PegasusConfig", "PegasusForConditionalGeneration", _seq2seq(), True,
           False, _EOS, label="Pegasus"),
    Family(
        "t5", "T5Config", "T5ForConditionalGeneration",
        {"d_model": HIDDEN, "d_ff": 2 * HIDDEN, "d_kv": 16, "num_layers": LAYERS,
         "num_decoder_layers": LAYERS, "num_heads": HEADS, "relative_attention_num_buckets": 8,
         "feed_forward_proj": "gated-gelu"},
        True, False, _EOS, label="T5 / mT5",
    ),
]  # fmt: skip

#: Every family, by name.
FAMILIES: dict[str, Family] = {f.name: f for f in (*_DECODERS, *_ENCODER_DECODERS)}
DECODER_ONLY = tuple(f.name for f in _DECODERS)
ENCODER_DECODER = tuple(f.name for f in _ENCODER_DECODERS)


#: A ChatML chat template (Qwen's layout), for :func:`tokenizer` with ``chat``.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")


def tokenizer(
    bos: bool = True,
    template: str | None = None,
    eos: str | None = None,
    *,
    adds_bos: bool = False,
    chat: bool = False,
):
    """A byte-level BPE tokenizer of :data:`VOCAB` tokens trained on :data:`TEXTS` (offline).

    With ``bos``: ``<s>`` is its BOS token and ``</s>`` its EOS (also unk); without, it has no
    BOS token (as Qwen's and T5's) and ``eos`` (default ``<|endoftext|>``) is its EOS. ``<pad>``
    pads. ``template`` (e.g. ``"$A </s>"``): the special tokens it adds around a text; with
    ``adds_bos`` (and no template) ``tokenizer(text)`` starts with BOS (as Llama's). With
    ``chat``, it has the ChatML markers :data:`CHAT_TOKENS` as added special tokens (ids
    ``VOCAB``, ``VOCAB + 1``) and :data:`CHAT_TEMPLATE`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    eos = eos or ("</s>" if bos else "<|endoftext|>")
    specials = [eos, "<s>", "<pad>"] if bos else [eos, "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(TEXTS) * 5, trainer)
    if template is None and adds_bos and bos:
        template = "<s> $A"
    if template is not None:
        used = [t for t in specials if t in template.split()]
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(t, tok.token_to_id(t)) for t in used]
        )
    names = {"eos_token": eos, "pad_token": "<pad>"}
    if bos:
        names.update(bos_token="<s>", unk_token=eos)
    out = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    if chat:
        out.add_special_tokens({"additional_special_tokens": list(CHAT_TOKENS)})
        out.chat_template = CHAT_TEMPLATE
    return out


def _special_ids(family: Family, tok) -> dict[str, Any]:
    ids = {"vocab_size": len(tok), "eos_token_id": tok.eos_token_id}
    ids["pad_token_id"] = tok.pad_token_id
    ids["bos_token_id"] = tok.bos_token_id if family.bos else tok.eos_token_id
    if family.encoder_decoder:
        ids["decoder_start_token_id"] = tok.pad_token_id
        ids["forced_eos_token_id"] = None
    return ids


def _is_norm_weight(name: str, p: torch.Tensor) -> bool:
    """A norm's weight: 1-D with "norm" in its name, or GPT-2-style ``ln_*.weight``."""
    norm = "norm" in name.lower() or name.rsplit(".", 2)[-2].startswith("ln_")
    return p.ndim == 1 and name.endswith("weight") and norm


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Give every bias random values (std 0.2) and every norm weight ``1 + N(0, 0.2²)``
    (Gemma-style ``1 + w`` norms then scale by about 1 too), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen).to(p.dtype) * 0.2
            if name.endswith("bias"):
                p.copy_(noise)
            elif _is_norm_weight(name, p):
                offset = "gemma" in type(model).__name__.lower()
                p.copy_(noise if offset else 1 + noise)


def build(name: str, path: str | Path, *, seed: int = 0, chat: bool = False) -> Path:
    """Build the tiny checkpoint of family ``name``, save it with its tokenizer to ``path``.

    A decoder-only family's tokenizer adds its BOS token (where it has one); with ``chat`` it
    also has ChatML markers and a chat template (see :func:`tokenizer`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, ready for ``hooklab.load(path)``.
    """
    if name not in FAMILIES:
        from hooklab.registry import unknown_name_error

        raise unknown_name_error("family", name, list(FAMILIES))
    family = FAMILIES[name]
    transformers = importlib.import_module("transformers")
    eos = "</s>" if family.encoder_decoder else None
    adds_bos = family.bos and not family.encoder_decoder
    tok = tokenizer(family.bos, family.template, eos, adds_bos=adds_bos, chat=chat)
    config = getattr(transformers, family.config)(**family.fields, **_special_ids(family, tok))
    torch.manual_seed(seed)
    model = getattr(transformers, family.model)(config).eval()
    randomize(model, seed)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


__all__ = ["DECODER_ONLY", "ENCODER_DECODER", "FAMILIES", "Family", "build", "tokenizer"]
