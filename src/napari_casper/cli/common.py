"""What several sub-commands share: reading inputs, parsing lists, writing result tables and reports."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from napari_casper.errors import CasperInputError, CasperUsageError, CheckpointMismatchError


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
    path = Path(path)
    if path.is_dir():
        raise CasperUsageError(f"{what} {path} is a folder, not a file; {fix}")
    if not path.is_file():
        raise CasperUsageError(f"{what} file {path} does not exist; {fix}")
    return path


def check_output(out: Path, inputs=(), option: str = "--out") -> Path:
    """Before any work: ``out`` is not one of the ``inputs`` and its folder can be written (a probe
    file is created there and removed), so a long run cannot end in "permission denied"."""
    from napari_casper.io.outputs import check_writable_folder
    from napari_casper.io.stores import refuse_input_as_output

    refuse_input_as_output(out, [p for p in inputs if p is not None], option)
    return check_writable_folder(out)


def require_checkpoint(path: Path, what: str, made_by: str) -> Path:
    """``path`` if it exists and is a PyTorch checkpoint file (a zip archive); else a clear error
    (``made_by`` names the command that writes such files)."""
    import zipfile

    require_file(path, what, f"pass a model file written by {made_by}")
    if not zipfile.is_zipfile(path):
        raise CheckpointMismatchError(
            f"{what} {path} is not a model file written by {made_by} (it is not a PyTorch checkpoint at all); "
            "pass the .pt file that command wrote."
        )
    return path


def safe_checkpoint_error(err: CasperInputError, path: Path, made_by: str) -> CasperInputError:
    """``err`` without torch's advice to load the file with ``weights_only=False`` (unsafe: it runs
    code stored in the file)."""
    if "weights_only" not in str(err):
        return err
    return CheckpointMismatchError(
        f"{path} is not a model file written by {made_by}: it holds Python objects other than plain arrays, "
        "which napari-casper never loads (loading them could run code stored in the file). Use a model that "
        f"{made_by} wrote."
    )


def load_casper_model(path: Path, panel_genes=None):
    """The CASPER model in ``path`` (``--model`` of impute), with errors a user can act on."""
    from napari_casper.casper.checkpoint import load_checkpoint

    require_checkpoint(path, "model (--model)", "`napari-casper train`")
    try:
        return load_checkpoint(path, panel_genes=panel_genes)
    except CasperInputError as err:
        raise safe_checkpoint_error(err, path, "`napari-casper train`") from err


def read_h5ad(path: Path, what: str):
    """The AnnData in ``path`` (``what`` names the option in the error, e.g. ``"spatial (--st)"``)."""
    from napari_casper.io.stores import read_h5ad as read_named

    return read_named(require_file(path, what.strip(), "pass an existing .h5ad file"), f"{what.strip()} ")


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
    """Create ``out`` and write each data frame as ``out / name`` (CSV, no index), each through a
    temporary file renamed into place."""
    from napari_casper.io.outputs import atomic_path

    for name, frame in tables.items():
        with atomic_path(out / name, ".csv") as scratch:
            frame.to_csv(scratch, index=False)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file renamed into place."""
    from napari_casper.io.outputs import atomic_path

    with atomic_path(path, path.suffix) as scratch:
        scratch.write_text(text)


def regenerate_section(command: str) -> list[str]:
    """The closing lines of a ``summary.md``: the command that regenerates it."""
    return ["Regenerate with:", "", "```", command, "```", ""]
