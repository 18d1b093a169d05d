"""The interactive PECoRe page: ``hooklab demo`` as a script (needs ``pip install -e ".[demo]"``).

    python scripts/demo.py                               # the toy model on http://127.0.0.1:7860
    python scripts/demo.py --model_name_or_path toy-mt --port 7861
    python scripts/demo.py --host 0.0.0.0                # reachable from your network
    python scripts/demo.py --help                        # every option

The same as ``hooklab demo`` (:mod:`hooklab.cli.demo`, :mod:`hooklab.demo`).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from hooklab.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/demo.py", default="demo", only=("demo",)))
