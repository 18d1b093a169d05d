"""Value-zeroing context-mixing figures from the command line: ``hooklab mixing`` as a script.

    python scripts/mixing.py                 # the toy model's default example
    python scripts/mixing.py --text "..." --targets " ..." --word x
    python scripts/mixing.py --help          # every option, with its description

See :mod:`hooklab.cli.mixing`.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from hooklab.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/mixing.py", default="mixing", only=("mixing",)))
