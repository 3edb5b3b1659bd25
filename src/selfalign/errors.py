"""Why a run stopped, when the reason is something the user can act on and no traceback would help: a write that
failed (disk full, no permission) or a training loss that stopped being finite. The command line prints the message
as one line and exits with code 2, as it does for a recipe mistake (`selfalign.config.ConfigError`)."""

from __future__ import annotations


class RunStopped(Exception):
    """A run stopped for a reason outside the code; the message is one line and says what to do."""


class WriteFailed(RunStopped):
    """An artifact could not be written (`errno`: the OSError's, e.g. ENOSPC, EACCES); nothing half-written is left
    in its place."""

    def __init__(self, message: str, filename: str, errno: int | None):
        super().__init__(message)
        self.filename, self.errno = filename, errno


class TrainingDiverged(RunStopped):
    """A training step's loss was NaN or infinite; the stage saved nothing."""
