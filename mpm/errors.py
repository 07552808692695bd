"""Exceptions shared by every layer of the package.

The CLI prints any :class:`MPMError` as one line and exits with status 2, so the
message must name the file, key, URL or host at fault.
"""


class MPMError(Exception):
    """Base class of the errors this package raises on bad input or environment."""


class CheckpointError(MPMError, ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


class BackendError(MPMError, RuntimeError):
    """An attention backend that cannot run with these inputs on this device."""


class ConfigError(MPMError, ValueError):
    """A configuration value or file that is invalid."""


class DownloadError(MPMError, RuntimeError):
    """A download that failed or delivered the wrong bytes."""


class DatasetError(MPMError, RuntimeError):
    """A dataset that is missing, incomplete or unreadable."""


class RemoteError(MPMError, RuntimeError):
    """A remote benchmark target that failed (the message holds its stderr)."""
