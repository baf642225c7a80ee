"""The project's error for bad input data, below every module that raises it."""

from __future__ import annotations


class DataError(ValueError):
    """A data file is missing or malformed."""
