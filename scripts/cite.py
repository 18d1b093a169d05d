"""Answer attribution with citations (MIRAGE) from the command line: ``hooklab cite`` as a script.

    python scripts/cite.py                        # the toy-rag example, offline
    python scripts/cite.py --question "Ben lives in?" \\
        --documents "Anna lives in Rome.","Ben lives in Oslo." --save_path cite.json
    python scripts/cite.py --help                 # every option, with its description
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from hooklab.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/cite.py", default="cite", only=("cite",)))
