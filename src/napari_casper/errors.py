"""Exceptions raised for bad user input.

Every message names the problem *and* the fix, because the GUI shows it verbatim in a
napari notification and the CLI prints it as the error line.

The CLI maps them to exit codes: :class:`CasperUsageError` (the command line itself is wrong: a
path that does not exist, an output that is one of the inputs, options that contradict each
other) exits with 2, like argparse's own usage errors; every other :class:`CasperInputError`
(the data cannot be used, an output cannot be written, another run holds the output) exits with 1.
"""


class CasperInputError(ValueError):
    """Input data that napari-casper cannot use as given (the message says how to fix it)."""


class CasperUsageError(CasperInputError):
    """The request itself is wrong (a missing path, an output that is an input, contradictory options)."""


class CheckpointMismatchError(CasperInputError):
    """A checkpoint was trained for other genes, centroids or a newer format."""


class OutputError(CasperInputError):
    """An output cannot be written (read-only folder, full disk, another run writing it); nothing was lost."""


class OutputBusyError(OutputError):
    """Another run is writing the same output right now (its lock file is held)."""


class TrainingCancelled(RuntimeError):
    """Raised inside training when the caller's cancel flag is set (the best model so far is kept)."""


class PeerMethodFailed(RuntimeError):
    """A peer method (another package's imputation, e.g. gimVI) failed on its own terms on this input, such as
    a training that diverged to NaN. Benchmarks record it for that fold and go on; it is not a napari-casper bug."""
