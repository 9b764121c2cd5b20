"""The project's exception types, one home for all of them.

Each carries a message of one line that names the file (or parameter) and the fix, so that a
failed stage says what to do without a traceback being read.
"""
from __future__ import annotations


class SelectionError(ValueError):
    """A cell without what STS needs (no spiking sweep, no sweep near a target, flat signal, ...).

    ``reason`` is a short category that the QC tables count; the cell is skipped, not fatal.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


class TableError(ValueError):
    """A stage table (``cells.csv``, ``sweeps.csv``, ``splits.csv``, ...) that cannot be used as it is."""


class DataNotAvailableError(FileNotFoundError):
    """Raw files are missing from the cache and cannot be downloaded, or do not match their pinned hash."""


class MissingArtifactError(FileNotFoundError):
    """An upstream artifact is missing: the message names the notebook and the make target to run first."""


class RecordingError(Exception):
    """A recording file that cannot be used (corrupt, truncated, wrong layout)."""


class DataDirLocked(RuntimeError):
    """Another run is writing the same data folder."""


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; nothing was replaced."""


class BundleError(ValueError):
    """A model bundle that cannot be used (missing, altered, or made on other scalogram settings)."""


class PredictError(ValueError):
    """Input or output that :func:`sts_utils.stages.predict.predict_cells` cannot use (one line naming the file and the fix)."""


class SurplusTrial(RuntimeError):
    """A search trial taken when the study's last slot was taken by another worker at the same moment (never run)."""
