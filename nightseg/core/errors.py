"""The errors nightseg raises for what a user can fix: each message names the key, file or stage
and the fix (commands print it as one line, nightseg.core.cli)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and how to fix it."""


class DataError(RuntimeError):
    """A dataset file or layout is bad; the message names the file and what is wrong."""


class TrainingError(RuntimeError):
    """A stage's training went wrong in a way a rerun will not fix by itself (a NaN or infinite
    loss); the message names the stage, epoch, step and what to change. Nothing was published."""
