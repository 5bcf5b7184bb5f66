"""Keras 3 itself as the gate's reference, in a subprocess (torch backend, CPU), so that
importing Keras never changes this process; it is fed only files this converter has parsed
and accepted, and loads them with ``safe_mode=True``."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from agebench.build.convert.keras_graph.archive import KerasGraphError, read_keras_archive
from agebench.build.convert.keras_graph.graph import parse_graph

_KERAS_WORKER = r"""
import io, os, sys
proto_in = os.fdopen(os.dup(0), "rb")
proto_out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # anything Keras prints goes to stderr, not into the protocol
import numpy as np
import keras
model = keras.saving.load_model(sys.argv[1], compile=False, safe_mode=True)
while True:
    header = proto_in.read(8)
    if len(header) < 8:
        break
    x = np.load(io.BytesIO(proto_in.read(int.from_bytes(header, "little"))), allow_pickle=False)
    y = model.predict(x, batch_size=32, verbose=0)
    buf = io.BytesIO()
    np.save(buf, np.asarray(y, dtype=np.float32), allow_pickle=False)
    data = buf.getvalue()
    proto_out.write(len(data).to_bytes(8, "little") + data)
    proto_out.flush()
"""


def keras_available() -> bool:
    return importlib.util.find_spec("keras") is not None


def _stop_worker(proc: subprocess.Popen[bytes], home: tempfile.TemporaryDirectory[str]) -> None:
    try:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
    home.cleanup()


class KerasReference:
    """Keras 3 (torch backend, CPU) running the ``.keras`` file in a long-lived subprocess.

    Call it with the ONNX graph's NCHW input; it transposes to NHWC for Keras. The file is
    first copied into a private folder and, with ``check`` (the default), parsed by this
    module, so Keras only ever loads a config of the layer types listed here, and loads it
    with ``safe_mode=True`` (Keras then refuses lambdas). ``check=False`` exists to test
    Keras' own refusals.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, output_name: str = "age", check: bool = True
    ) -> None:
        self.path = Path(path).resolve()
        self.output_name = output_name
        self.check = check
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: Any = None
        self._finalizer: weakref.finalize | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        home = tempfile.TemporaryDirectory(prefix="agebench-keras-")
        try:
            private = Path(home.name) / "model.keras"  # what is checked is what Keras loads
            private.write_bytes(self.path.read_bytes())
            if self.check:
                parse_graph(read_keras_archive(private))
        except BaseException:
            home.cleanup()
            raise
        env = dict(os.environ)
        env.update(
            KERAS_BACKEND="torch",
            KERAS_HOME=home.name,  # keras.json goes here, not into the user's home
            CUDA_VISIBLE_DEVICES="",  # CPU: deterministic, and no GPU memory taken
            PYTHONNOUSERSITE="1",
        )
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
        proc = subprocess.Popen(
            [sys.executable, "-c", _KERAS_WORKER, str(private)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=home.name,
        )
        self._finalizer = weakref.finalize(self, _stop_worker, proc, home)
        return proc

    def _fail(self) -> KerasGraphError:
        detail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            detail = lines[-1] if lines else ""
        return KerasGraphError(f"{self.path}: the Keras reference failed: {detail}")

    def predict_nhwc(self, images_nhwc: np.ndarray) -> np.ndarray:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._start()
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(images_nhwc, dtype=np.float32), allow_pickle=False)
        data = buffer.getvalue()
        try:
            proc.stdin.write(len(data).to_bytes(8, "little") + data)
            proc.stdin.flush()
            header = proc.stdout.read(8)
            if len(header) < 8:
                proc.wait(timeout=30)
                raise self._fail()
            reply = proc.stdout.read(int.from_bytes(header, "little"))
        except (BrokenPipeError, subprocess.TimeoutExpired):
            raise self._fail() from None
        return np.load(io.BytesIO(reply), allow_pickle=False)

    def __call__(self, images_nchw: np.ndarray) -> dict[str, np.ndarray]:
        nhwc = np.transpose(np.asarray(images_nchw, dtype=np.float32), (0, 2, 3, 1))
        return {self.output_name: self.predict_nhwc(nhwc)}

    def close(self) -> None:
        """Stop the Keras subprocess (it restarts on the next call)."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._proc = None
