"""Feature attribution of generated (or forced) tokens: ``hooklab attribute`` as a script.

    python scripts/attribute.py                 # the toy model's default example
    python scripts/attribute.py --method integrated_gradients --n_steps 16
    python scripts/attribute.py --help          # every option, with its description

See :mod:`hooklab.cli.attribution`.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from hooklab.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/attribute.py", default="attribute", only=("attribute",)))
