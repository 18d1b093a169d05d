"""Outputs of every hooklab method, and the one protocol they share.

- :mod:`hooklab.output.io`: one file format for every output (:func:`load_output` returns the
  right class for any saved file).
- :mod:`hooklab.output.view`: one colour scale, terminal and HTML tables, one legend.
- :mod:`hooklab.output.provenance`: what made an output (model, version, parameters).
"""

from hooklab.output.io import FORMAT_VERSION
from hooklab.output.io import load as load_output
from hooklab.output.io import save as save_output

__all__ = ["FORMAT_VERSION", "load_output", "save_output"]
