"""Attention-knockout curves from the command line: ``hooklab knockout`` as a script.

    python scripts/knockout.py                 # the toy model's default example
    python scripts/knockout.py --text "..." --sources "cue=sick; last=-1" --window 2
    python scripts/knockout.py --help          # every option, with its description

See :mod:`hooklab.cli.mixing`.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from hooklab.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/knockout.py", default="knockout", only=("knockout",)))
