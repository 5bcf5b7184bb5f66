"""The one version source: ``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``), the
package re-exports it and provenance records it, so the three can never disagree."""

__version__ = "0.1.0"
