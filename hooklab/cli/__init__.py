"""The ``hooklab`` command: ``hooklab SUBCOMMAND [--option VALUE ...]`` (or ``python -m hooklab``).

Subcommands (each ``--help`` lists every option with its description and default):

- ``attribute-context``: PECoRe on one example (Inseq's name and options);
- ``dataset``: PECoRe over a JSONL file, resumable, with plausibility metrics;
- ``toy-dataset``: write such a JSONL from the toy model's annotated examples;
- ``attribute``: feature attribution of generated (or forced) tokens;
- ``mixing``: value-zeroing context mixing figures;
- ``knockout``: attention-knockout curves;
- ``routes``: information-flow routes of one prediction;
- ``demo``: the interactive PECoRe page (Gradio; the demo extra);
- ``cite``: citations of an answer's sentences to retrieved documents (MIRAGE);
- ``calibrate-cti``: the CTI threshold of ``cite`` calibrated on annotated examples.

Flags are checked against the command's signature (:mod:`hooklab.cli.args`) and output paths
before any model is loaded. A user error prints one line and exits with status 2; ``--debug``
(or ``HOOKLAB_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from hooklab.cli.args import Command, HelpRequested, UsageError, options_of


def commands() -> dict[str, Command]:
    """The subcommands by name."""
    from hooklab.cite import CiteOptions
    from hooklab.cli.attribution import attribute, method_options
    from hooklab.cli.calibrate import calibrate_cti
    from hooklab.cli.cite import cite
    from hooklab.cli.demo import demo
    from hooklab.cli.mixing import knockout, mixing
    from hooklab.cli.pecore import attribute_context, dataset, toy_dataset
    from hooklab.cli.routes import routes
    from hooklab.pecore import PecoreOptions

    pecore = options_of(PecoreOptions)
    title = "PECoRe options (hooklab.pecore.PecoreOptions):"
    return {
        "attribute-context": Command("attribute-context", attribute_context, pecore, title),
        "dataset": Command("dataset", dataset, pecore, title),
        "toy-dataset": Command("toy-dataset", toy_dataset),
        "attribute": Command(
            "attribute", attribute, method_options(), "Method options (only the chosen method's):"
        ),
        "mixing": Command("mixing", mixing),
        "knockout": Command("knockout", knockout),
        "routes": Command("routes", routes),
        "demo": Command("demo", demo),
        "cite": Command("cite", cite, options_of(CiteOptions), "Citation options (CiteOptions):"),
        "calibrate-cti": Command(
            "calibrate-cti",
            calibrate_cti,
            options_of(CiteOptions),
            "Citation options (CiteOptions):",
        ),
    }


def overview(prog: str, table: dict[str, Command]) -> str:
    lines = [f"usage: {prog} COMMAND [--option VALUE ...]", "", "Commands:"]
    lines += [f"  {name:<18} {c.summary}" for name, c in table.items()]
    lines += ["", f"Run '{prog} COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "hooklab",
    default: str | None = None,
    only: Sequence[str] | None = None,
) -> int:
    """Run a subcommand from ``argv``; return the exit status (0, or 2 for a user error).

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
        prog: the program name shown in usage lines and errors.
        default: the subcommand run when ``argv`` does not start with one (the scripts).
        only: the subcommands offered (default: all).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HOOKLAB_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    table = commands()
    if only is not None:
        table = {k: v for k, v in table.items() if k in only}
    name = argv[0].replace("_", "-") if argv and not argv[0].startswith("-") else None
    if name in table:
        argv = argv[1:]
    elif default is not None and (name is None or not argv[0].isidentifier()):
        name = default
    elif name is None:
        print(overview(prog, table), file=sys.stdout if argv else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    else:
        import difflib

        close = difflib.get_close_matches(name, list(table), n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        print(f"{prog}: error: unknown command {argv[0]!r}.{hint} Commands: "
              f"{', '.join(table)}.", file=sys.stderr)  # fmt: skip
        return 2
    command = table[name]
    usage = prog if name == default else f"{prog} {name}"
    try:
        kwargs = command.parse(argv)
        command.fn(**kwargs)
    except HelpRequested:
        others = [c for k, c in table.items() if k != name] if name == default else []
        print(command.help(usage, others))
        return 0
    except (UsageError, ValueError, TypeError, KeyError, FileExistsError, FileNotFoundError) as err:
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"{usage}: error: {message}", file=sys.stderr)
        if not isinstance(err, UsageError):
            print("(run with --debug for the traceback)", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """The console script ``hooklab``: :func:`main` with ``sys.exit``."""
    sys.exit(main())
