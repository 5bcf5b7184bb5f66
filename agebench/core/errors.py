"""User-facing errors: one line, naming the thing at fault, never a traceback."""

from __future__ import annotations


class AgebenchError(Exception):
    """A problem the user can fix (bad path, unknown model, invalid manifest).

    The CLI prints ``str(error)`` alone and exits non-zero; anything else escaping is a bug.
    """


class ManifestError(AgebenchError):
    """A model manifest is missing, malformed or inconsistent with its weights."""


class ModelNotFoundError(AgebenchError):
    """No registered model has the requested name."""


class IntegrityError(AgebenchError):
    """A file's sha256 differs from the one its manifest promises."""
