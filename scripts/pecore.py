"""PECoRe context attribution from the command line: ``hooklab attribute-context`` as a script.

    python scripts/pecore.py                      # the release example on the toy model
    python scripts/pecore.py --model_name_or_path gpt2 \\
        --input_context_text "..." --input_current_text "..." --save_path out.json
    python scripts/pecore.py dataset --input data.jsonl --output out.jsonl
    python scripts/pecore.py toy-dataset --output toy.jsonl --n 60
    python scripts/pecore.py --help               # every option, with its description

The same as ``hooklab attribute-context`` / ``hooklab dataset`` / ``hooklab toy-dataset``
(:mod:`hooklab.cli.pecore`).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from hooklab.cli import main

if __name__ == "__main__":
    only = ("attribute-context", "dataset", "toy-dataset")
    sys.exit(main(prog="scripts/pecore.py", default="attribute-context", only=only))
