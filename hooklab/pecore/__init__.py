"""PECoRe context attribution (Sarti et al., ICLR 2024): CTI + CCI.

Example:
    >>> import hooklab
    >>> from hooklab.pecore import pecore
    >>> model = hooklab.load("toy")
    >>> result = pecore(model, "George was sick yesterday.", "His colleagues asked him to come")
    >>> result.show()  # doctest: +SKIP
"""

from hooklab.pecore.core import pecore, pecore_batch
from hooklab.pecore.options import PecoreOptions, cti_metrics
from hooklab.pecore.result import ContextSensitiveToken, Cue, PecoreResult
from hooklab.pecore.select import select, selection_threshold

__all__ = [
    "ContextSensitiveToken",
    "Cue",
    "PecoreOptions",
    "PecoreResult",
    "cti_metrics",
    "pecore",
    "pecore_batch",
    "select",
    "selection_threshold",
]
