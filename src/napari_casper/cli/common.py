"""What several sub-commands share: reading inputs, parsing lists, writing result tables and reports."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from napari_casper.errors import CasperInputError


def positive_int(text: str) -> int:
    """argparse ``type`` for counts (epochs, steps, chunk sizes, threads): a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value} (leave the option out for the default)")
    return value


def require_file(path: Path, what: str, fix: str = "pass an existing file") -> Path:
    """``path`` if it is an existing file, else a :class:`CasperInputError` naming ``what`` and ``fix``."""
    if not Path(path).is_file():
        raise CasperInputError(f"{what} file {path} does not exist; {fix}")
    return Path(path)


def read_h5ad(path: Path, what: str):
    """The AnnData in ``path`` (``what`` names the option in the error, e.g. ``"spatial (--st)"``)."""
    from napari_casper.io.stores import read_h5ad as read_named

    return read_named(require_file(path, what, "pass an existing .h5ad file"), f"{what} ")


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (empty for None or "")."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def read_gene_list(spec: str | None) -> list[str] | None:
    """``None``/``all`` -> None; ``@file`` -> one gene per line; else comma-separated names."""
    if not spec or spec == "all":
        return None
    if spec.startswith("@"):
        path = require_file(Path(spec[1:]), "gene list")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return split_list(spec)


def reproducing_command(command: str, options: Mapping[str, object], *, out: Path) -> str:
    """``napari-casper <command> --flag value ... --out OUT``; options that are None are left out."""
    parts = ["napari-casper", command]
    for flag, value in options.items():
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join([*parts, "--out", str(out)])


def markdown_table(frame, columns: Iterable[str], *, headers: Mapping[str, str] | None = None, formats=None) -> str:
    """A markdown table of ``frame[columns]``: floats as ``.3f`` unless ``formats[column]`` says otherwise."""
    columns = list(columns)
    headers = headers or {}
    formats = formats or {}
    lines = [
        "| " + " | ".join(headers.get(c, c) for c in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for record in frame[columns].itertuples(index=False):
        cells = [
            format(v, formats.get(c, ".3f")) if isinstance(v, float) else str(v) for c, v in zip(columns, record)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(out: Path, tables: Mapping[str, object]) -> None:
    """Create ``out`` and write each data frame as ``out / name`` (CSV, no index)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(out / name, index=False)


def regenerate_section(command: str) -> list[str]:
    """The closing lines of a ``summary.md``: the command that regenerates it."""
    return ["Regenerate with:", "", "```", command, "```", ""]
