"""Answer attribution with citations for retrieval-augmented generation (MIRAGE).

Example:
    >>> import hooklab
    >>> model = hooklab.load("toy-rag")
    >>> docs = ["Anna lives in Rome.", "Ben lives in Oslo.", "Clara lives in Paris."]
    >>> hooklab.cite(model, "Ben lives in?", docs).citations
    [[1, 0]]
"""

from hooklab.cite.aggregate import filter_scores, split_sentences
from hooklab.cite.calibrate import Calibration, calibrate_cti
from hooklab.cite.core import cite, cite_from_inseq, cite_from_pecore, join_documents
from hooklab.cite.options import CiteOptions
from hooklab.cite.result import CitationResult, SentenceCitation

__all__ = [
    "Calibration",
    "CitationResult",
    "CiteOptions",
    "SentenceCitation",
    "calibrate_cti",
    "cite",
    "cite_from_inseq",
    "cite_from_pecore",
    "filter_scores",
    "join_documents",
    "split_sentences",
]
