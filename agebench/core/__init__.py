"""The core: what every layer above may use and which imports nothing of agebench above it.

Errors, atomic writes, bounded file reads, the plugin registry, provenance, the version, the
run-folder file layout, metrics and statistics. Nothing here knows about models, faces,
benchmarks, runners or front ends (a layer contract in ``pyproject.toml`` checks it).
"""
