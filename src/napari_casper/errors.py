"""Exceptions raised for bad user input.

Every message names the problem *and* the fix, because the GUI shows it verbatim in a
napari notification and the CLI prints it as the error line.
"""


class CasperInputError(ValueError):
    """Input data that napari-casper cannot use as given (the message says how to fix it)."""


class CheckpointMismatchError(CasperInputError):
    """A checkpoint was trained for other genes, centroids or a newer format."""


class TrainingCancelled(RuntimeError):
    """Raised inside training when the caller's cancel flag is set (the best model so far is kept)."""
