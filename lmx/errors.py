"""Errors a user can act on. The CLI prints them as one line on stderr and exits with code 2."""


class LmxError(Exception):
    """Base class of every error lmx raises on purpose."""


class ConfigError(LmxError, ValueError):
    """A configuration value is missing, of the wrong type, out of range or inconsistent."""


class DataError(LmxError):
    """A corpus, tokenizer or data pipeline input is missing, empty or unreadable."""


class CheckpointError(LmxError):
    """A checkpoint or run directory cannot be read, is incompatible, or would be overwritten."""


class NonFiniteError(LmxError):
    """Training produced a NaN or infinite loss or gradient under the `halt` policy."""
