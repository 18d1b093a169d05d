"""PECoRe on encoder–decoder models against explicit Hugging Face computations (float64).

Source = the filled input template (special tokens included); the output context is forced on
the decoder side; the contextless pair is the current source alone and the decoder start token.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import hooklab
from hooklab.pecore import PecoreResult, pecore
from tests.test_mixing_encoder_decoder import build_seq2seq

CONTEXT, CURRENT = "George was sick yesterday.", "His colleagues asked him"
OUT_CONTEXT, OUT_CURRENT = "Georg war krank.", "Seine Kollegen"


@pytest.fixture(scope="module", params=["marian", "t5"])
def model(request, tmp_path_factory):
    path = build_seq2seq(tmp_path_factory.mktemp(request.param), request.param)
    return hooklab.load(path, device="cpu", dtype="float64")


def _embed(stack, ids):
    assert getattr(stack, "embed_scale", 1.0) == 1.0  # inputs_embeds == embed_tokens(ids)
    return stack.embed_tokens(torch.tensor([ids]))[0].detach()


def _logits(hf, src_e, dec_e):
    return hf(inputs_embeds=src_e[None], decoder_inputs_embeds=dec_e[None]).logits[0]


def _example_ids(tok) -> tuple[list[int], list[int], list[int], list[int], int, int]:
    """Ids of the example as PECoRe encodes it: source, contextless source, decoder prefix
    (output context), current output; the input context's length and first position."""
    src, nsrc = tok(f"{CONTEXT} {CURRENT}")["input_ids"], tok(CURRENT)["input_ids"]
    prefix = tok(OUT_CONTEXT, add_special_tokens=False)["input_ids"]
    out = tok(" " + OUT_CURRENT, add_special_tokens=False)["input_ids"]
    n_ctx = len(tok(CONTEXT, add_special_tokens=False)["input_ids"])
    offsets = tok(f"{CONTEXT} {CURRENT}", return_offsets_mapping=True)["offset_mapping"]
    lead = next(i for i, (a, b) in enumerate(offsets) if b > a)  # special tokens first (T5 here)
    return src, nsrc, prefix, out, n_ctx, lead


def test_cti_and_cci_equal_explicit_computations(model):
    hf, tok = model.original_model, model.tokenizer
    res = pecore(
        model, CONTEXT, CURRENT, output_context_text=OUT_CONTEXT, output_current_text=OUT_CURRENT,
        output_template="{context} {current}", context_sensitivity_topk=2,
        context_sensitivity_std_threshold=None,
    )  # fmt: skip
    start = hf.config.decoder_start_token_id
    src, nsrc, prefix, out, n_ctx, lead = _example_ids(tok)
    assert "".join(res.input_context_tokens).strip() == CONTEXT
    assert "".join(res.output_context_tokens).strip() == OUT_CONTEXT
    enc, dec = hf.get_encoder(), hf.get_decoder()
    with torch.no_grad():
        ctx = _logits(hf, _embed(enc, src), _embed(dec, [start, *prefix, *out]))
        ctx = ctx[len(prefix) : len(prefix) + len(out)]
        noctx = _logits(hf, _embed(enc, nsrc), _embed(dec, [start, *out]))[: len(out)]
    kl = (ctx.softmax(-1) * (ctx.log_softmax(-1) - noctx.log_softmax(-1))).sum(-1)
    assert_close(torch.tensor(res.cti_scores, dtype=torch.float64), kl, atol=1e-6, rtol=1e-5)
    assert len(res.context_sensitive) == 2
    for entry in res.context_sensitive:
        t = entry.index
        alt = int(noctx[t].argmax())
        src_e = _embed(enc, src).requires_grad_(True)
        dec_e = _embed(dec, [start, *prefix, *out[:t]]).requires_grad_(True)
        p = _logits(hf, src_e, dec_e)[-1].softmax(-1)
        # contrast: ỹ* after the same prefix, or the contextless pass when ỹ* = ŷ
        contrast = p[alt] if alt != out[t] else noctx[t].softmax(-1)[out[t]]
        target = p[out[t]] - contrast
        g_src, g_dec = torch.autograd.grad(target, (src_e, dec_e))
        assert_close(torch.tensor(entry.input_context_scores, dtype=torch.float64),
                     g_src.norm(dim=-1)[lead : lead + n_ctx], atol=1e-6, rtol=1e-4)  # fmt: skip
        assert_close(torch.tensor(entry.output_context_scores, dtype=torch.float64),
                     g_dec.norm(dim=-1)[1 : 1 + len(prefix)], atol=1e-6, rtol=1e-4)  # fmt: skip
        assert entry.contextless_token == tok.decode([alt])
    assert PecoreResult.from_dict(res.to_dict()) == res
    inseq = res.to_inseq()
    assert inseq["cci_scores"][0]["output_context_scores"] is not None


def test_generated_output_after_the_forced_output_context(model):
    res = pecore(
        model, CONTEXT, CURRENT, output_context_text=OUT_CONTEXT,
        output_template="{context} {current}", generation_kwargs={"max_new_tokens": 4},
    )  # fmt: skip
    hf, tok = model.original_model, model.tokenizer
    start = hf.config.decoder_start_token_id
    prefix = tok(OUT_CONTEXT, add_special_tokens=False)["input_ids"]
    src = torch.tensor([tok(f"{CONTEXT} {CURRENT}")["input_ids"]])
    expected = hf.generate(src, decoder_input_ids=torch.tensor([[start, *prefix]]),
                           do_sample=False, max_new_tokens=4, min_new_tokens=4)  # fmt: skip
    assert 1 <= len(res.output_current_tokens) <= 4
    new = expected[0, 1 + len(prefix) :].tolist()[: len(res.output_current_tokens)]
    assert [tok.decode([i]) for i in new] == list(res.output_current_tokens)


def test_alti_logit_as_the_cci_method(model):
    """CCI with alti_logit (contrastive logit difference) equals alti_logit's own scores of
    that step against the same foil, summed over layers, on the context tokens."""
    tok = model.tokenizer
    res = pecore(
        model, CONTEXT, CURRENT, output_context_text=OUT_CONTEXT, output_current_text=OUT_CURRENT,
        output_template="{context} {current}", context_sensitivity_topk=2,
        context_sensitivity_std_threshold=None, attribution_method="alti_logit",
        attributed_fn="contrast_logits_diff",
    )  # fmt: skip
    src, nsrc, prefix, out, n_ctx, lead = _example_ids(tok)
    hf, start = model.original_model, model.original_model.config.decoder_start_token_id
    with torch.no_grad():
        dec = _embed(hf.get_decoder(), [start, *out])
        noctx = _logits(hf, _embed(hf.get_encoder(), nsrc), dec)[: len(out)]
    assert len(res.context_sensitive) == 2
    compared = 0
    for entry in res.context_sensitive:
        t = entry.index
        alt = int(noctx[t].argmax())  # ỹ*_t, the contextless prediction
        assert entry.contextless_token == tok.decode([alt])
        target = [*prefix, *out[: t + 1]]
        if alt == out[t]:
            continue  # no token foil: the contrast is the contextless pass (not ALTI-Logit's)
        (seq,) = hooklab.attribute(
            model, [src], [target], method="alti_logit", attr_pos_start=-1,
            contrast_targets=[[*target[:-1], alt]],
        )  # fmt: skip
        source = seq.source_attributions[-1].sum(-1).double()
        decoder = seq.attributions[-1].sum(-1).double()
        compared += 1
        assert_close(torch.tensor(entry.input_context_scores, dtype=torch.float64),
                     source[lead : lead + n_ctx], atol=1e-7, rtol=1e-5)  # fmt: skip
        assert_close(torch.tensor(entry.output_context_scores, dtype=torch.float64),
                     decoder[1 : 1 + len(prefix)], atol=1e-7, rtol=1e-5)  # fmt: skip
    assert compared >= 1
