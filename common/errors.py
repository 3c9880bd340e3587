"""The problems a user fixes in the data, the config or the command line: one base class, one family.

Every entry point (``train.py``, ``scripts/*.py``) catches :class:`UserError` and prints its message as one
``error:`` line with no traceback: the message already says what was wrong, where (file, row, field, or config
key) and how to fix it. Anything else is a bug and keeps its traceback.

Each subclass also derives from the built-in type its callers caught before (``ValueError`` or
``RuntimeError``), so ``except ValueError`` around a loader or a setting still works.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user must fix; the message names what and where, a traceback adds nothing."""


class ConfigError(UserError, ValueError):
    """A setting (a constructor argument, a config key, a command-line flag) out of range or inconsistent."""


class DataError(UserError, ValueError):
    """A data problem the user must fix; the message names the file, the row and the field."""


class ModelLoadError(UserError, ValueError):
    """The model path or id does not lead to a loadable model or tokenizer."""


class QuantizationUnavailableError(UserError, RuntimeError):
    """4-bit loading cannot run here: bitsandbytes is missing, too old, or has no kernels for the device."""


class PrecisionError(UserError, ValueError):
    """A precision or dtype name that does not exist."""


class RevisionError(UserError, ValueError):
    """A requested revision that the Hub does not know (a typo in a tag or commit)."""


class HubAccessError(UserError, ValueError):
    """A gated or private Hub repository this machine may not read: its license not accepted, or no valid token."""


class NonFiniteLossError(UserError, RuntimeError):
    """Too many consecutive steps had a NaN / Inf loss or gradient, or the weights themselves diverged."""


class NonFiniteCheckpointError(UserError, RuntimeError):
    """A checkpoint about to be written holds NaN or Inf weights; the previous file is kept."""


class EvaluationError(ConfigError):
    """A setting of the evaluation the user must fix; the message says which and how."""


class ResultsError(UserError, ValueError):
    """A results folder without a readable ``evaluation_results.json``; the message says what to run."""


class UploadError(UserError, RuntimeError):
    """Something the user must fix before uploading; the message says what."""


class RunInUseError(UserError, RuntimeError):
    """Another process is writing the same run folder (``common.run_lock``)."""


class DiskFullError(UserError, OSError):
    """The disk filled while a file or folder was written atomically (``common.atomic``): the previous one is kept."""


class CorruptCheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read (truncated, damaged, not a checkpoint)."""
