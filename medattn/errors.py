"""Errors a user can act on.

Every user-facing failure is raised as :class:`MedattnError` (or a subclass) carrying one sentence
that names what is wrong and what to do. The CLI prints that sentence and exits with code 2;
anything else is an internal failure (exit code 1).
"""

from __future__ import annotations


class MedattnError(Exception):
    """A mistake in the user's input (arguments, files, data): printed as one sentence, exit 2."""

    exit_code = 2


class DataError(MedattnError):
    """A data folder, CSV or image that cannot be used as it is."""


class ConfigError(MedattnError):
    """An option or config value outside what a command accepts."""
