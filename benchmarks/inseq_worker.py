"""The Inseq side of the benchmarks: runs in Inseq 0.7.1's venv (never imports hooklab).

Started by :class:`benchmarks.common.InseqWorker`. Reads one JSON job a line on stdin and
answers one JSON line on stdout; everything Inseq prints goes to stderr. Models stay loaded
between jobs, so the seconds a job reports cover the work alone. Jobs (``op``):

- ``attribute``: ``model.attribute`` of one forced target (or generating, ``target`` null) on a
  GPT-2 checkpoint with a word-level tokenizer; reports seconds, forward calls and sequences x
  tokens through the model, the largest |convergence delta| if one was asked for.
- ``memory``: resident and peak MB (``reset``: reset the peak first; Linux ``/proc``).
- ``versions``: of Inseq, transformers, torch, Captum, and the seconds ``import inseq`` took.
- ``pecore_load``, ``pecore``: Inseq's ``attribute-context`` (PECoRe) on a checkpoint with a
  GPT-2 tokenizer: model load; one call per example, model loaded (or loading it each time).

One adaptation, for ReAGent: Inseq's POS-tag token sampler builds its tag table with NLTK data
it downloads (impossible offline), so it gets one tag for the whole vocabulary; sampling then
costs the same table lookup, only the draws are uniform.
"""

import json
import os
import sys
import time
import traceback

START = time.perf_counter()
REPLY = sys.stdout
sys.stdout = sys.stderr  # Inseq's prints must not mix with the replies

import inseq  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402

torch.set_num_threads(1)
IMPORT_S = time.perf_counter() - START
EOT = "<|endoftext|>"


def uniform_pos_tags() -> None:
    """Give ReAGent's POS sampler one tag for the whole vocabulary (NLTK data is offline)."""
    from inseq.attr.feat.ops.reagent_core import token_sampler

    token_sampler.POSTagTokenSampler.build_pos_mapping_from_vocab = staticmethod(
        lambda *a, tokenizer, **k: {"ALL": list(range(tokenizer.vocab_size))}
    )


class Worker:
    def __init__(self):
        self.hf, self.models, self.pecore_models = {}, {}, {}
        self.counts = {"calls": 0, "tokens": 0}

    def _count(self, module, args, kwargs, output):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:  # called with inputs_embeds (gradient methods)
            ids = kwargs["inputs_embeds"][..., 0]
        self.counts["calls"] += 1
        self.counts["tokens"] += int(ids.numel())

    def model(self, path, method, load_kwargs):
        key = (path, method, json.dumps(load_kwargs, sort_keys=True))
        if key not in self.models:
            eager = method == "attention"  # SDPA returns no attention weights
            if (path, eager) not in self.hf:
                impl = {"attn_implementation": "eager"} if eager else {}
                hf = GPT2LMHeadModel.from_pretrained(path, **impl).eval()
                hf.register_forward_hook(self._count, with_kwargs=True)
                self.hf[path, eager] = hf
            if method == "reagent":
                uniform_pos_tags()
            tok = PreTrainedTokenizerFast(
                tokenizer_file=os.path.join(path, "tokenizer.json"),
                bos_token=EOT,
                eos_token=EOT,
                pad_token=EOT,
            )
            model = inseq.load_model(self.hf[path, eager], method, tokenizer=tok, **load_kwargs)
            if method == "value_zeroing":
                model.config.value_vector = "value_states"  # GPT-2's name in transformers 4.57
            self.models[key] = model
        return self.models[key]

    def attribute(
        self, path, method, prompt, target=None, load_kwargs=None, attribute_kwargs=None, **_
    ):
        model = self.model(path, method, load_kwargs or {})
        kwargs = dict(attribute_kwargs or {})
        if target is not None:
            kwargs["generated_texts"] = prompt + target
        self.counts = {"calls": 0, "tokens": 0}
        start = time.perf_counter()
        out = model.attribute(prompt, show_progress=False, **kwargs)
        seconds = time.perf_counter() - start
        seq = out.sequence_attributions[0]
        deltas = (seq.step_scores or {}).get("deltas")
        attr = seq.target_attributions
        return {
            "seconds": seconds,
            **self.counts,
            "max_abs_delta": None if deltas is None else float(deltas.abs().max()),
            "nan": None if attr is None else int(torch.isnan(attr).sum()),
            "target": [t.token for t in seq.target][len(seq.source) :],
        }

    @staticmethod
    def pecore_args(model_dir, example, settings):
        from inseq.commands.attribute_context import AttributeContextArgs

        context, current, output = example
        return AttributeContextArgs(
            model_name_or_path=model_dir,
            input_context_text=context,
            input_current_text=current,
            output_current_text=output,
            show_viz=False,
            device="cpu",
            **settings,
        )

    def pecore_load(self, model_dir, settings, **_):
        start = time.perf_counter()
        tok = settings.get("tokenizer_kwargs", {})
        self.pecore_models[model_dir] = inseq.load_model(
            model_dir, "saliency", tokenizer_kwargs=tok
        )
        return {"seconds": time.perf_counter() - start}

    def pecore(self, model_dir, examples, settings, with_load=False, **_):
        from inseq.commands.attribute_context.attribute_context import (
            attribute_context,
            attribute_context_with_model,
        )

        if not with_load and model_dir not in self.pecore_models:
            self.pecore_load(model_dir, settings)
        start, outs = time.perf_counter(), []
        for example in examples:
            args = self.pecore_args(model_dir, example, settings)
            if with_load:
                outs.append(attribute_context(args))
            else:
                outs.append(attribute_context_with_model(args, self.pecore_models[model_dir]))
        return {
            "seconds": time.perf_counter() - start,
            "picks": [[c.cti_idx for c in out.cci_scores] for out in outs],
            "outputs": [out.output_current for out in outs],
        }


def memory(reset=False, **_):
    """``{"rss_mb", "peak_mb"}`` from /proc/self/status; ``reset`` resets the peak first."""
    import gc

    gc.collect()
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    kb = {k: int(fields[f].split()[0]) for k, f in (("rss_mb", "VmRSS"), ("peak_mb", "VmHWM"))}
    return {k: v / 1024 for k, v in kb.items()}


def main() -> None:
    worker = Worker()
    for line in sys.stdin:
        job = json.loads(line)
        try:
            op = job.pop("op")
            if op == "versions":
                from importlib.metadata import version

                names = ("inseq", "transformers", "torch", "captum")
                reply = {"import_s": IMPORT_S, **{name: version(name) for name in names}}
            elif op == "memory":  # resident MB now and at peak; reset=True resets the peak
                reply = memory(**job)
            elif op in ("attribute", "pecore_load", "pecore"):
                reply = getattr(worker, op)(**job)
            else:
                reply = {"error": f"unknown op {op!r}"}
        except Exception:  # the job fails, the worker stays up for the next
            reply = {"error": traceback.format_exc()[-2000:]}
        REPLY.write(json.dumps(reply) + "\n")
        REPLY.flush()


if __name__ == "__main__":
    main()
