"""Command-line interface: ``napari-casper <command> ...``.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` (which
registers the command and its options and sets ``func``), so commands stay independent.
"""

from __future__ import annotations

import argparse
import sys

from napari_casper import __version__
from napari_casper.cli import (
    benchmark,
    histology_benchmark,
    histology_predict,
    histology_train,
    impute,
    run_sample,
    train,
)
from napari_casper.errors import CasperInputError

#: the sub-command modules, in ``--help`` order; each registers its command with ``add_parser(subparsers)``
COMMANDS = (train, impute, benchmark, histology_train, histology_predict, histology_benchmark, run_sample)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-casper",
        description="Spatial-transcriptomics imputation (CASPER) and viewing in napari.",
    )
    parser.add_argument("--version", action="version", version=f"napari-casper {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CasperInputError as err:
        print(f"napari-casper {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
