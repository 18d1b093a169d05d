"""hooklab: interpretability for generative language models on TransformerLens hook points.

Example:
    >>> import hooklab
    >>> model = hooklab.load("toy")
    >>> out = hooklab.attribute(model, "George was sick yesterday. His colleagues asked him "
    ...     "to come", step_scores=["probability", "entropy"])
    >>> out.show()  # doctest: +SKIP
"""

from hooklab import mixing, pecore, testing
from hooklab.attribute import attribute
from hooklab.attribution import AttributionOutput, SequenceAttribution
from hooklab.cite import CitationResult, cite
from hooklab.faithfulness import evaluate_faithfulness
from hooklab.generation import Generation, generate
from hooklab.hooks import hook_name, temporary_hooks
from hooklab.inputs import Batch, encode_prompt, encode_target, make_batch
from hooklab.loading import load
from hooklab.methods import (
    AttributedFn,
    MethodResult,
    MethodSpec,
    list_methods,
    method_info,
    register_method,
)
from hooklab.mixing import KnockoutOutput, MixingOutput
from hooklab.output.io import load as load_output
from hooklab.plain import no_twin
from hooklab.steps import StepArgs, list_step_functions, register_step_function
from hooklab.version import __version__

__all__ = [
    "AttributedFn",
    "AttributionOutput",
    "Batch",
    "CitationResult",
    "Generation",
    "KnockoutOutput",
    "MethodResult",
    "MethodSpec",
    "MixingOutput",
    "SequenceAttribution",
    "StepArgs",
    "__version__",
    "attribute",
    "cite",
    "encode_prompt",
    "encode_target",
    "evaluate_faithfulness",
    "generate",
    "hook_name",
    "list_methods",
    "list_step_functions",
    "load",
    "load_output",
    "make_batch",
    "method_info",
    "mixing",
    "no_twin",
    "pecore",
    "register_method",
    "register_step_function",
    "temporary_hooks",
    "testing",
]
