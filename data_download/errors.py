"""The errors a download can end with, each carrying a message a user can act on.

Messages name the file or folder and what was expected; they never contain a token.
"""

from __future__ import annotations


class DownloadError(RuntimeError):
    """A download could not complete (network, server, or local file system)."""


class AccessDeniedError(DownloadError):
    """The server answered 401 or 403: no credentials, wrong credentials, or terms not accepted."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InsecureTransportError(DownloadError):
    """A token would travel over plain http to another machine: refused before any request."""


class RemoteNotFoundError(DownloadError):
    """The server does not have the file (404 or 410); callers skip it and report it."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the known size or hash; nothing was kept."""


class DestinationError(DownloadError):
    """The destination folder cannot be created or written to."""


class MissingDependencyError(DownloadError):
    """An optional dependency (TotalSegmentator, its weights) is not available."""
