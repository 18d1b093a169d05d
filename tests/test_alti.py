"""ALTI, ALTI-Logit and information-flow routes against explicit-loop references (float64)."""

from __future__ import annotations

import tempfile

import pytest
import torch

import hooklab
from hooklab.methods.alti_logit import logit_contributions
from hooklab.methods.alti_logit_seq2seq import seq2seq_logit_contributions
from hooklab.mixing import alti
from hooklab.mixing.adapter import Example, model_adapter
from hooklab.mixing.alti import (
    alti_matrices,
    layer_acts,
    part_acts,
    part_matrices,
    record,
    record_seq2seq,
)
from hooklab.mixing.alti_acts import keep_heads
from hooklab.seq2seq import decoder_start_id, encode_source
from hooklab.testing import check_method
from hooklab.zoo import build
from tests.reference import flow, flow_seq2seq

PROMPT = "George was sick yesterday. His colleagues asked him"


@pytest.fixture(scope="module", params=["gpt2", "llama", "granite"])
def tiny64(request):
    """The tiny GPT-2 and Llama fixtures (non-zero biases, GQA) and the zoo's Granite (scaled
    residual branches, embeddings, attention and logits) in float64."""
    if request.param == "granite":
        path = build("granite", tempfile.mkdtemp())
    else:
        path = request.getfixturevalue(f"{request.param}_dir")
    return hooklab.load(path, device="cpu", dtype=torch.float64)


def _ids(model):
    return model.tokenizer(PROMPT)["input_ids"]


def test_parts_sum_to_the_attention_block_output(tiny64):
    act, _ = flow.run(tiny64, _ids(tiny64))
    for layer in range(tiny64.cfg.n_layers):
        t, b_o, y = flow.transformed_vectors(tiny64, act, layer)
        torch.testing.assert_close(t.sum(1) + b_o, y, atol=1e-10, rtol=1e-10)


def test_alti_matches_the_reference(tiny64):
    ids = _ids(tiny64)
    got = alti_matrices(tiny64, ids, layers=range(tiny64.cfg.n_layers))
    torch.testing.assert_close(got, flow.ref_alti(tiny64, ids), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kv_heads", [[0], [1]])
def test_alti_heads_match_the_reference(tiny64, kv_heads):
    ids = _ids(tiny64)
    out = alti(tiny64, [ids], targets="", heads=kv_heads)[0]
    torch.testing.assert_close(out.scores, flow.ref_alti_heads(tiny64, ids, kv_heads),
                               atol=1e-10, rtol=1e-10)  # fmt: skip
    assert out.scores.sum(-1).lt(1).any()  # the left-out heads take a share
    assert dict(out.parameters["heads"]) == {str(la): tuple(kv_heads) for la in out.layers}
    act, _ = flow.run(tiny64, ids)
    for layer in range(tiny64.cfg.n_layers):  # the parts, the rest and b_O still give y
        t, b_o, y, rest = flow.transformed_vectors(tiny64, act, layer, kv_heads)
        torch.testing.assert_close(t.sum(1) + rest + b_o, y, atol=1e-10, rtol=1e-10)
    every = alti(tiny64, [ids], targets="", heads={0: [0], 1: None})[0]  # a dict, per layer
    torch.testing.assert_close(every.scores[1], alti(tiny64, [ids], targets="")[0].scores[1])
    with pytest.raises(ValueError, match="heads"):
        alti(tiny64, [ids], targets="", heads=99)


def test_alti_output_rows_rollout_and_round_trip(tiny64, tmp_path):
    out = alti(tiny64, [PROMPT, "It rained"], targets=" all", rollout=True)
    assert [o.method for o in out] == ["alti", "alti"]
    for o in out:
        torch.testing.assert_close(o.scores.sum(-1), torch.ones(o.scores.shape[:2]).double())
        assert o.scores.triu(1).abs().max() == 0  # a causal query mixes no later key
        torch.testing.assert_close(o.rollout[1], o.scores[1] @ o.scores[0])
    loaded = type(out[0]).load(out[0].save(tmp_path / "alti.safetensors"))
    assert torch.equal(loaded.scores, out[0].scores) and loaded.method == "alti"
    assert out[0].plot() is not None


@pytest.mark.parametrize("foil", [False, True])
def test_alti_logit_matches_the_reference_and_the_logit(tiny64, foil):
    ids = _ids(tiny64)
    query, target, other = len(ids) - 2, ids[-1], ids[2]
    scores, remainder, logit = logit_contributions(
        tiny64, ids, [query], [target], [other] if foil else None
    )
    ref_scores, ref_remainder, ref_logit = flow.ref_alti_logit(
        tiny64, ids, query, target, other if foil else None
    )
    torch.testing.assert_close(scores[0], ref_scores, atol=1e-10, rtol=1e-9)
    assert remainder[0].item() == pytest.approx(ref_remainder, abs=1e-10)
    assert logit[0].item() == pytest.approx(ref_logit, abs=1e-10)
    # completeness: the parts and the documented remainder give the model's logit (difference);
    # Hugging Face's RMSNorm computes in float32 even in a float64 model
    tol = 1e-6 if "RMS" in type(tiny64.ln_final.original_component).__name__ else 1e-10
    assert (scores.sum() + remainder[0]).item() == pytest.approx(ref_logit, abs=tol)
    assert scores[0, query + 1 :].abs().max() == 0  # nothing from tokens the query cannot see


def test_alti_logit_without_mlp_moves_the_mlps_to_the_remainder(tiny64):
    ids = _ids(tiny64)
    queries, targets = [3, 5], [ids[4], ids[6]]
    with_mlp = logit_contributions(tiny64, ids, queries, targets)
    attn_only = logit_contributions(tiny64, ids, queries, targets, mlp=False)
    torch.testing.assert_close(with_mlp[2], attn_only[2])  # the same logit
    moved = with_mlp[0].sum((1, 2)) - attn_only[0].sum((1, 2))
    torch.testing.assert_close(attn_only[1] - with_mlp[1], moved)


def test_alti_logit_keeps_the_method_contract(tiny):
    out = check_method(tiny, "alti_logit")
    seq = out[0]
    assert seq.attributions.shape[-1] == tiny.cfg.n_layers  # [step, pos, layer]
    total = seq.attributions.nan_to_num().sum((1, 2)) + seq.extras["remainder"]
    torch.testing.assert_close(total, seq.extras["logit"], atol=1e-4, rtol=1e-4)


def test_alti_logit_contrast_targets_explain_the_difference(gpt2):
    target = gpt2.tokenizer(" to come", add_special_tokens=False)["input_ids"]
    foils = [(t + 1) % len(gpt2.tokenizer) for t in target]
    diff = hooklab.attribute(
        gpt2,
        PROMPT,
        [target],
        method="alti_logit",
        contrast_targets=[foils],
        attributed_fn="contrast_logits_diff",
    )[0]
    plain = hooklab.attribute(gpt2, PROMPT, [target], method="alti_logit")[0]
    ids = plain.token_ids.tolist()
    logits = gpt2(torch.tensor([ids]), prepend_bos=False)[0].detach()
    rows = range(plain.target_start - 1, len(ids) - 1)
    expected = torch.stack([logits[r, t] - logits[r, f] for r, t, f in zip(rows, target, foils)])
    torch.testing.assert_close(diff.extras["logit"], expected.float(), atol=1e-5, rtol=1e-5)
    total = diff.attributions.nan_to_num().sum((1, 2)) + diff.extras["remainder"]
    torch.testing.assert_close(total, expected.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt_neox", "falcon"])
def test_parallel_blocks_are_decomposed(family):
    model = hooklab.load(build(family, tempfile.mkdtemp()), device="cpu", dtype=torch.float64)
    ids = model.tokenizer(PROMPT)["input_ids"]
    scores, remainder, logit = logit_contributions(model, ids, [4], [ids[5]])
    assert (scores.sum() + remainder).item() == pytest.approx(logit.item(), abs=1e-9)
    mixing = alti_matrices(model, ids, layers=[0, 1])
    torch.testing.assert_close(mixing.sum(-1), torch.ones(2, len(ids)).double())


@pytest.mark.parametrize("per_head", [False, True])
@torch.no_grad()
def test_route_weights_are_the_contributions_they_come_from(tiny64, per_head):
    routes = hooklab.mixing.information_flow(tiny64, PROMPT, threshold=0.0, per_head=per_head)
    act, _ = flow.run(tiny64, routes.token_ids.tolist())
    n, n_layers = len(routes.tokens), tiny64.cfg.n_layers
    assert routes.nodes[-1] == (2 * n_layers, n - 1) and len(routes.weights) > 0
    pattern = {la: act[f"blocks.{la}.attn.hook_pattern"] for la in range(n_layers)}
    vectors = {la: flow.transformed_vectors(tiny64, act, la) for la in range(n_layers)}
    for (sd, sp, td, tp, kind, head), w in zip(routes.edges.tolist(), routes.weights.tolist()):
        layer = sd // 2
        if td % 2 == 0:  # after the layer: resid_mid + mlp_out
            mid = act[f"blocks.{layer}.hook_resid_mid"][tp]
            mlp = act[f"blocks.{layer}.hook_mlp_out"][tp]
            parts, total, index = [mid, mlp], mid + mlp, kind - 1
        else:  # after attention: one part per source (and head) and the residual
            t, _, y = vectors[layer]
            x = act[f"blocks.{layer}.hook_resid_pre"]
            attn = [t[tp, j] - (x[tp] if j == tp else 0) for j in range(n)]
            if per_head:  # split each source's term by the heads' share, one head at a time
                w_o, w_v, b_v = (
                    getattr(tiny64.blocks[layer].attn, k) for k in ("W_O", "W_V", "b_V")
                )
                group = w_o.shape[0] // w_v.shape[0]
                ln1 = act[f"blocks.{layer}.ln1.hook_out"]
                value = [[ln1[j] @ w_v[g] + b_v[g] for g in range(w_v.shape[0])] for j in range(n)]
                m = flow.config_constant(tiny64, "residual_multiplier")
                attn = [m * pattern[layer][h, tp, j] * (value[j][h // group] @ w_o[h])
                        for h in range(w_o.shape[0]) for j in range(n)]  # fmt: skip
            parts, total = [*attn, x[tp]], y[tp]
            index = len(attn) if kind == 1 else (head * n + sp if per_head else sp)
        norms = torch.stack([total.abs().sum() - (total - p).abs().sum() for p in parts])
        expected = norms.clamp(min=0)[index] / norms.clamp(min=0).sum()
        assert w == pytest.approx(expected.item(), abs=1e-10), (sd, sp, td, tp, kind, head)


def test_routes_threshold_table_plot_and_round_trip(toy, tmp_path):
    routes = hooklab.mixing.information_flow(toy, PROMPT, threshold=0.04)
    assert routes.weights.gt(0.04).all() and routes.edges.shape == (len(routes.weights), 6)
    frame = routes.to_pandas()
    assert set(frame["kind"]) <= {"attention", "residual", "mlp"} and len(frame) == len(
        routes.weights
    )
    assert routes.plot().axes
    loaded = hooklab.mixing.RoutesOutput.load(routes.save(tmp_path / "routes.safetensors"))
    assert torch.equal(loaded.edges, routes.edges) and torch.equal(loaded.weights, routes.weights)
    assert loaded.tokens == routes.tokens and dict(loaded.parameters) == dict(routes.parameters)
    fewer = hooklab.mixing.information_flow(toy, PROMPT, threshold=0.2)
    assert len(fewer.weights) < len(routes.weights)
    with pytest.raises(ValueError, match="threshold"):
        hooklab.mixing.information_flow(toy, PROMPT, threshold=1.5)


def test_routes_command_writes_the_figure_and_the_routes(tmp_path):
    from hooklab.cli.routes import routes

    routes(figure_path=str(tmp_path / "r.png"), save_path=str(tmp_path / "r.safetensors"))
    assert (tmp_path / "r.png").exists() and (tmp_path / "r.pdf").exists()
    assert len(hooklab.mixing.RoutesOutput.load(tmp_path / "r.safetensors").weights) > 0


@pytest.fixture(scope="module", params=["marian", "bart", "t5"])
def seq2seq64(request):
    """Tiny encoder–decoders in float64: post-norm (Marian, BART) and pre-norm (T5)."""
    return hooklab.load(build(request.param, tempfile.mkdtemp()), device="cpu",
                        dtype=torch.float64)  # fmt: skip


@pytest.mark.parametrize("part", ["encoder", "decoder", "cross"])
def test_alti_plus_parts_sum_to_the_sublayer_output(seq2seq64, part):
    adapter = model_adapter(seq2seq64, part)
    example = adapter.encode([PROMPT], [" asked him to come"])[0]
    act = record_seq2seq(seq2seq64, example, part, range(adapter.n_layers))
    for layer in range(adapter.n_layers):
        acts = part_acts(seq2seq64, act, part, layer)
        n = acts.y.shape[0]
        t = acts.transformed(torch.arange(n))
        torch.testing.assert_close(t.sum(1) + acts.bias, acts.y, atol=1e-10, rtol=1e-10)
        kept = keep_heads(acts, [1], seq2seq64.cfg.n_heads)  # one head credited, the rest apart
        t = kept.transformed(torch.arange(n))
        assert t.shape[1] == acts.head_values.shape[0] + (part == "cross") + 1
        torch.testing.assert_close(t.sum(1) + acts.bias, acts.y, atol=1e-10, rtol=1e-10)
    one = alti(seq2seq64, PROMPT, targets=" asked him to come", part=part, heads=1)[0]
    out = alti(seq2seq64, PROMPT, targets=" asked him to come", part=part)[0]
    assert one.scores.ge(0).all() and one.scores.sum(-1).le(1 + 1e-12).all()
    assert not torch.allclose(one.scores, out.scores)
    rows = out.scores.sum(-1)
    if part == "cross":  # the residual's share is the rest of the row
        assert out.scores.shape[-1] == len(example.ids) and rows.le(1 + 1e-12).all()
    else:
        torch.testing.assert_close(rows, torch.ones_like(rows))
    assert out.parameters["part"] == part


@pytest.mark.parametrize("foil", [False, True])
def test_seq2seq_alti_logit_matches_the_reference_and_the_logit(seq2seq64, foil):
    src = encode_source(seq2seq64, PROMPT)
    dec = [
        decoder_start_id(seq2seq64),
        *seq2seq64.tokenizer(" asked him", add_special_tokens=False)["input_ids"],
    ]
    query, target, other = len(dec) - 2, dec[-1], dec[1]
    scores, remainder, logit = seq2seq_logit_contributions(
        seq2seq64, src, dec, [query], [target], [other] if foil else None
    )
    ref_scores, ref_logit = flow_seq2seq.ref_seq2seq_alti_logit(
        seq2seq64, src, dec, query, target, other if foil else None
    )
    torch.testing.assert_close(scores[0], ref_scores, atol=1e-10, rtol=1e-9)
    hf = seq2seq64.original_model(
        input_ids=torch.tensor([src]), decoder_input_ids=torch.tensor([dec])
    )
    expected = hf.logits[0, query, target] - (hf.logits[0, query, other] if foil else 0)
    assert logit[0].item() == pytest.approx(expected.item(), abs=1e-10)
    assert ref_logit == pytest.approx(expected.item(), abs=1e-10)
    # completeness; T5's RMSNorm computes its divisor in float32 even in a float64 model
    tol = 1e-6 if seq2seq64.original_model.config.model_type == "t5" else 1e-10
    assert (scores.sum() + remainder[0]).item() == pytest.approx(expected.item(), abs=tol)
    n_src = len(src)
    assert scores[0, n_src + query + 1 :].abs().max() == 0  # no later decoder token
    assert scores[0, :n_src].abs().sum() > 0  # the source gets a share
    attn_only = seq2seq_logit_contributions(seq2seq64, src, dec, [query], [target], mlp=False)
    moved = seq2seq_logit_contributions(seq2seq64, src, dec, [query], [target])
    torch.testing.assert_close(
        attn_only[1] - moved[1], moved[0].sum((1, 2)) - attn_only[0].sum((1, 2))
    )


def test_seq2seq_alti_logit_keeps_the_method_contract():
    out = check_method(hooklab.load("toy-mt"), "alti_logit")
    for seq in out:
        total = seq.attributions.nan_to_num().sum((1, 2))
        total += seq.source_attributions.nan_to_num().sum((1, 2)) + seq.extras["remainder"]
        torch.testing.assert_close(total, seq.extras["logit"], atol=1e-4, rtol=1e-4)


def test_alti_plus_cross_rollout_reaches_the_source_tokens(seq2seq64):
    target = " asked him to come"
    out = alti(seq2seq64, PROMPT, targets=target, part="cross", rollout=True)[0]
    enc = alti(seq2seq64, PROMPT, targets=target, part="encoder")[0].scores
    n_layers, (n_tgt, n_src) = len(out.layers), out.scores.shape[1:]
    r_enc = torch.eye(n_src, dtype=enc.dtype)  # the encoder's rollout, entry by entry
    for c in enc:
        nxt = torch.zeros_like(r_enc)
        for i in range(n_src):
            for s in range(n_src):
                nxt[i, s] = sum(float(c[i, k] * r_enc[k, s]) for k in range(n_src))
        r_enc = nxt
    for la in range(n_layers):
        for i in range(n_tgt):
            for s in range(n_src):
                expected = sum(float(out.scores[la, i, k] * r_enc[k, s]) for k in range(n_src))
                assert out.rollout[la, i, s].item() == pytest.approx(expected, abs=1e-12)
    torch.testing.assert_close(out.rollout.sum(-1), out.scores.sum(-1))  # R_enc rows sum to 1
    assert out.parameters["rollout"] is True and out.plot(rollout=True) is not None


@pytest.mark.parametrize("per_head", [False, True])
def test_seq2seq_route_weights_are_the_contributions_they_come_from(seq2seq64, per_head, tmp_path):
    routes = hooklab.mixing.information_flow(
        seq2seq64, PROMPT, targets=" asked him", threshold=0.0, per_head=per_head
    )
    ids, n_src = routes.token_ids.tolist(), routes.source_length
    assert n_src == len(encode_source(seq2seq64, PROMPT)) and routes.position == len(ids) - 1
    assert routes.nodes[-1] == (3 * routes.n_layers, len(ids) - 1)
    ref = flow_seq2seq.ref_seq2seq_route_weights(
        seq2seq64, ids[:n_src], ids[n_src:], routes.edges.tolist(), per_head=per_head
    )
    torch.testing.assert_close(routes.weights, ref, atol=1e-10, rtol=0)
    kinds = set(routes.edges[:, 4].tolist())
    assert kinds == {0, 1, 2, 3}  # attention, residual, mlp and cross edges at threshold 0
    cross = routes.edges[routes.edges[:, 4] == 3]
    assert (cross[:, 1] < n_src).all() and (cross[:, 3] >= n_src).all()  # source -> decoder
    assert (cross[:, 0] == 2 * routes.encoder_layers).all()  # from the encoder's last states
    loaded = hooklab.mixing.RoutesOutput.load(routes.save(tmp_path / "r.safetensors"))
    assert (loaded.source_length, loaded.encoder_layers) == (n_src, routes.encoder_layers)
    assert torch.equal(loaded.edges, routes.edges) and routes.plot().axes


def test_alti_plus_post_norm_encoder_matches_the_reference():
    model = hooklab.load(build("marian", tempfile.mkdtemp()), device="cpu", dtype=torch.float64)
    src = model.tokenizer(PROMPT)["input_ids"]
    scores = part_matrices(model, Example(tuple(src), (0,)), "encoder", layers=[0, 1])
    for layer in (0, 1):
        ref = flow.ref_post_norm_alti(model, src, layer)
        torch.testing.assert_close(scores[layer], ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text", "olmo2"])
def test_post_attention_norms_are_decomposed(family):
    model = hooklab.load(build(family, tempfile.mkdtemp()), device="cpu", dtype=torch.float64)
    ids = model.tokenizer(PROMPT)["input_ids"]
    recorded = record(model, ids, range(model.cfg.n_layers))
    for layer in range(model.cfg.n_layers):
        acts = layer_acts(model, recorded, layer)
        assert acts.norm is not None
        t = acts.transformed(torch.arange(len(ids)))
        torch.testing.assert_close(t.sum(1) + acts.bias, acts.y, atol=1e-6, rtol=1e-6)
    mixing = alti_matrices(model, ids, layers=[0, 1])
    torch.testing.assert_close(mixing.sum(-1), torch.ones(2, len(ids)).double())
    if family == "gemma2":  # tanh soft-capped logits are no linear readout: refused
        with pytest.raises(NotImplementedError, match="soft-caps its logits"):
            logit_contributions(model, ids, [4], [ids[5]])
        return
    scores, remainder, logit = logit_contributions(model, ids, [4], [ids[5]])
    assert (scores.sum() + remainder).item() == pytest.approx(logit.item(), abs=1e-5)
