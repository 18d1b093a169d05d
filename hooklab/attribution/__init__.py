"""The attribution result kind: :class:`AttributionOutput` of :class:`SequenceAttribution`.

- :mod:`hooklab.attribution.sequence`: one sequence's scores (and its part of the record).
- :mod:`hooklab.attribution.output`: the output of :func:`hooklab.attribute`; its record.
- :mod:`hooklab.attribution.views`: terminal, HTML and pandas tables.
- :mod:`hooklab.attribution.plot`: the heatmap.
- :mod:`hooklab.attribution.aggregate`: reduce, merge and subtract scores.
"""

from hooklab.attribution.output import AttributionOutput
from hooklab.attribution.sequence import SequenceAttribution

__all__ = ["AttributionOutput", "SequenceAttribution"]
