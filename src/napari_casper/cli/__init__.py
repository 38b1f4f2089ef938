"""Command-line interface: ``napari-casper <command> ...``.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which
registers the command and its options and sets ``func``), so commands stay independent.

Errors: every failure is one line ``napari-casper COMMAND: error: ...`` on stderr, without a
traceback (``--debug`` shows it). Exit status 2 for a wrong command line (argparse's usage
errors and :class:`~napari_casper.errors.CasperUsageError`), 1 for data that cannot be used, an
output that cannot be written or an unexpected failure, 130 when interrupted (Ctrl+C).
"""

from __future__ import annotations

import argparse
import sys

from napari_casper import __version__
from napari_casper.cli import (
    benchmark,
    default_reader,
    histology_benchmark,
    histology_predict,
    histology_train,
    impute,
    regions_suggest,
    run_sample,
    train,
    view,
)
from napari_casper.errors import CasperInputError, CasperUsageError

#: the sub-command modules, in ``--help`` order; each registers its command with ``add_parser(subparsers)``
COMMANDS = (train, impute, benchmark, histology_train, histology_predict, histology_benchmark, regions_suggest, run_sample, view, default_reader)

DEBUG_HELP = "on an error, show the full Python traceback (for bug reports) instead of the one-line message"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-casper",
        description="Spatial-transcriptomics imputation (CASPER) and viewing in napari.",
        epilog="Errors are reported in one line (exit status 2: wrong command line, 1: unusable data or "
        "an output that cannot be written); add --debug to see the traceback.",
    )
    parser.add_argument("--version", action="version", version=f"napari-casper {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    for command in sub.choices.values():  # also accepted after the command name
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"napari-casper {args.command}: error:"
    try:
        return int(args.func(args) or 0)
    except CasperUsageError as err:
        if args.debug:
            raise
        print(f"{prefix} {_one_line(err)}", file=sys.stderr)
        return 2
    except CasperInputError as err:
        if args.debug:
            raise
        print(f"{prefix} {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"napari-casper {args.command}: interrupted; outputs are written under temporary names, so nothing "
              "half-written is left in place (an interrupted .zarr imputation resumes when run again)", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print(f"{prefix} out of memory: use smaller chunks (--spot-chunk/--gene-chunk) or a machine with more memory",
              file=sys.stderr)
        return 1
    except OSError as err:
        if args.debug:
            raise
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"{prefix} {err.strerror or _one_line(err)}{where}; add --debug for the traceback", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - a bug: say so in one line, the traceback is one flag away
        if args.debug:
            raise
        print(f"{prefix} unexpected {type(err).__name__}: {_one_line(err)[:500]} -- this is a bug in napari-casper; "
              "run again with --debug and report the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
