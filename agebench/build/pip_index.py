"""Which package index the user's pip installs from (``PIP_*`` variables, then pip's
configuration files, then pip's default), and pip's other settings a fetch honours (certificate,
timeout); agebench names no index of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from agebench.build.sources import SourceError


def _pip_configuration() -> dict[str, str]:
    """pip's own configuration (files and ``PIP_*`` variables) as ``section.key -> value``."""
    try:
        from pip._internal.configuration import Configuration

        config = Configuration(isolated=False)
        config.load()
        values: dict[str, str] = {}
        # pip 24+ yields (file, {key: value}) in override order (later wins); older pips
        # yielded the merged (key, value) pairs
        for key, value in config.items():
            if isinstance(value, Mapping):
                values.update({str(k): str(v) for k, v in value.items()})
            else:
                values[str(key)] = str(value)
        return values
    except Exception:  # pip's internals moved, or pip is absent: ask the pip command instead
        pass
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    listed: dict[str, str] = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            listed[key.strip()] = value.strip().strip("'\"")
    return listed


def _config_value(config: Mapping[str, str], key: str) -> str | None:
    """A pip setting with pip's precedence: environment, then ``install``, then ``global``."""
    for scope in (":env:", "install", "global"):
        value = config.get(f"{scope}.{key}")
        if value:
            return value
    return None


def index_url() -> str:
    """The simple-API index the user's pip installs from.

    ``PIP_INDEX_URL``, else pip's configuration (``install.index-url``/``global.index-url``),
    else the default pip itself carries; agebench names no index of its own.
    """
    env = os.environ.get("PIP_INDEX_URL", "").strip()
    if env:
        return env
    configured = _config_value(_pip_configuration(), "index-url")
    if configured:
        return configured.split()[0]
    try:
        from pip._internal.models.index import PyPI

        return str(PyPI.simple_url)
    except Exception:
        raise SourceError(
            "cannot tell which package index to use: pip is not importable here; "
            "set PIP_INDEX_URL to a simple-API index"
        ) from None


def extra_index_urls() -> list[str]:
    """pip's ``extra-index-url`` values, searched after ``index_url()`` as pip does."""
    env = os.environ.get("PIP_EXTRA_INDEX_URL")
    value = env if env is not None else _config_value(_pip_configuration(), "extra-index-url")
    return [url for url in (value or "").split() if url]


def pip_setting(key: str, env: str) -> str | None:
    """A pip setting: its environment variable, else pip's configuration."""
    return os.environ.get(env) or _config_value(_pip_configuration(), key)
