"""Exceptions raised for user mistakes.

Every error a user can cause (a bad argument, a missing file, a corrupt archive, an unknown name)
is an :class:`EntrobustError`. The CLI prints such errors as one line and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EntrobustError(Exception):
    """Base class of every error caused by user input."""


class UnknownNameError(EntrobustError, KeyError):
    """A name looked up in a registry does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(EntrobustError):
    """A dataset file is missing, truncated, corrupt or has the wrong content."""


class CheckpointError(EntrobustError):
    """A checkpoint cannot be read, is unsafe, or does not match the requested model."""


class ConfigError(EntrobustError, ValueError):
    """A configuration value, attack argument or experiment file entry is invalid."""


class NotEvaluatedError(EntrobustError, LookupError):
    """A number was asked for where nothing was measured, e.g. robust accuracy at an ε at which
    no attack ran."""
