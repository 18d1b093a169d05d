"""The dimension glossary: one name per tensor axis, used by every jaxtyping annotation.

hooklab annotates public tensors with :mod:`jaxtyping` shapes built from these names; tests run
with ``--jaxtyping-packages=hooklab,beartype.beartype`` so shapes are checked there and users pay
nothing. Use the names below (as string parts of a shape, e.g. ``Float[Tensor, "batch step
pos"]``) and add a new one here, with its meaning, before using it anywhere. A fixed size is
written as a number (``"edge 6"``).

=============  ==============================================================================
name           meaning
=============  ==============================================================================
batch          examples of a batch (left-padded rows)
pos            token positions of a sequence (BOS included; padded width inside a batch)
query_pos      positions whose attention rows are read or edited (the attending token)
key_pos        positions attended to (equal to ``pos`` for self-attention)
source_pos     positions of an encoder input (encoder–decoder models)
target_pos     positions of a decoder input (encoder–decoder models)
step           attributed target tokens: step t predicts ``tokens[target_start + t]``
layer          transformer blocks (of one stack: the decoder-only stack, encoder or decoder)
head           attention (query) heads
kv_head        key/value heads (fewer than ``head`` under grouped-query attention)
d_model        the residual stream width
d_head         the width of one head's query, key and value vectors
d_vocab        the vocabulary (logit rows)
source         named source sets of an attention knockout
window         the layer windows of a knockout sweep (one per sweep point)
part           the parts a vector is decomposed into (ALTI: one transformed vector per token)
rows           leading dimensions of a row-wise function (any number, as ``*rows``)
edge           the edges of an information-flow route graph
=============  ==============================================================================
"""

from __future__ import annotations

#: Every dimension name in the glossary, in the table's order.
DIMENSIONS: tuple[str, ...] = (
    "batch",
    "pos",
    "query_pos",
    "key_pos",
    "source_pos",
    "target_pos",
    "step",
    "layer",
    "head",
    "kv_head",
    "d_model",
    "d_head",
    "d_vocab",
    "source",
    "window",
    "part",
    "rows",
    "edge",
)
