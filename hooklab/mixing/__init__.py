"""Context mixing: value zeroing and attention knockout as hook interventions.

- :func:`value_zeroing` (Mohebbi et al., EACL 2023): per-layer ``[query_pos, key_pos]`` mixing
  matrices from zeroing each token's value vectors.
- :func:`attention_knockout` (Geva et al., EMNLP 2023): the change of the predicted token's
  probability when attention edges are blocked in a window of layers.
- :func:`encoder_decoder_value_zeroing`: value zeroing of encoder self-attention, decoder
  self-attention and cross-attention in encoder–decoder models; :func:`encoder_decoder_knockout`
  blocks their attention edges through a small eager-attention shim (their bridges discard
  pattern edits).
"""

from hooklab.mixing.encoder_decoder import encoder_decoder_value_zeroing
from hooklab.mixing.encoder_decoder_knockout import encoder_decoder_knockout
from hooklab.mixing.knockout import attention_knockout, knockout_probabilities
from hooklab.mixing.knockout_output import KnockoutOutput
from hooklab.mixing.output import MixingOutput
from hooklab.mixing.value_zeroing import rollout_scores, value_zeroing

__all__ = [
    "KnockoutOutput",
    "MixingOutput",
    "attention_knockout",
    "encoder_decoder_knockout",
    "encoder_decoder_value_zeroing",
    "knockout_probabilities",
    "rollout_scores",
    "value_zeroing",
]
