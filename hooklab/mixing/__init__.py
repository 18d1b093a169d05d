"""Context mixing: value zeroing and attention knockout as hook interventions.

- :func:`value_zeroing` (Mohebbi et al., EACL 2023): per-layer ``[query_pos, key_pos]`` mixing
  matrices from zeroing each token's value vectors.
- :func:`alti` (Ferrando et al., EMNLP 2022): per-layer ``[query_pos, key_pos]`` mixing
  matrices from the distance of each token's transformed vector to the layer output.
- :func:`information_flow` (Ferrando and Voita, EMNLP 2024): the graph of the edges that
  matter for one prediction (:class:`RoutesOutput`).
- :func:`attention_knockout` (Geva et al., EMNLP 2023): the change of the measured token's
  probability when attention edges are blocked in a window of layers.

Both take ``prompts`` (one or a list), forced ``targets``, and return one output per prompt, on
decoder-only and encoder–decoder models alike: ``part`` picks the attention ("decoder" on
decoder-only models; "encoder", "decoder" or "cross" on encoder–decoder ones). The differences
between the two kinds of models live in :mod:`hooklab.mixing.adapter`.
"""

from hooklab.mixing.adapter import PARTS, Example, model_adapter
from hooklab.mixing.alti import alti
from hooklab.mixing.knockout import attention_knockout, knockout_probabilities
from hooklab.mixing.knockout_output import KnockoutOutput
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.routes import RoutesOutput, information_flow
from hooklab.mixing.value_zeroing import rollout_scores, value_zeroing

__all__ = [
    "PARTS",
    "Example",
    "KnockoutOutput",
    "MixingOutput",
    "RoutesOutput",
    "alti",
    "attention_knockout",
    "information_flow",
    "knockout_probabilities",
    "model_adapter",
    "rollout_scores",
    "value_zeroing",
]
