"""The output layer every hooklab result kind builds on; it knows no concrete kind.

- :mod:`hooklab.output.io`: one file format for every output (:func:`load_output` returns the
  right class for any saved file); kinds plug in with :func:`register_kind`.
- :mod:`hooklab.output.files`: atomic writes of every file.
- :mod:`hooklab.output.view`: one colour scale, one number format, terminal and HTML tables,
  token spans, one legend.
- :mod:`hooklab.output.style`: one figure style (paper widths, TrueType fonts, token labels).
- :mod:`hooklab.output.provenance`: what made an output (model, version, parameters).

The result kinds own their records and views: :mod:`hooklab.attribution`,
:mod:`hooklab.mixing.output`, :mod:`hooklab.mixing.knockout_output`,
:mod:`hooklab.pecore.result`.
"""

from hooklab.output.io import FORMAT_VERSION, register_kind
from hooklab.output.io import load as load_output
from hooklab.output.io import save as save_output

__all__ = ["FORMAT_VERSION", "load_output", "register_kind", "save_output"]
