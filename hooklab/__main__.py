"""``python -m hooklab``: the ``hooklab`` command (see :mod:`hooklab.cli`)."""

import sys

from hooklab.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m hooklab"))
