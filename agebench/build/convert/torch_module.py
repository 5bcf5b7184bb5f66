"""PyTorch modules -> ONNX, with the module's own forward as the gate's reference.

The module comes from a factory you name (``"my_pkg.nets:build"``, called with no arguments)
plus a state dict read with ``torch.load(weights_only=True)`` and loaded with
``strict=True``, so a checkpoint that would run code, or weights that do not fit the
architecture, are refused rather than half-used.

A TorchScript file can stand in for the factory, but loading one (``torch.jit.load``)
*executes* the TorchScript program it contains: it is code, not data. It is accepted only with
``trust_torchscript=True`` (``--trust-torchscript`` on the command line), for files whose
origin you trust as you would a Python package.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agebench.build.convert import Conversion
from agebench.build.convert.torch_export import export_torchscript
from agebench.core.errors import AgebenchError

DEFAULT_OPSET = 17
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_factory(target: str | Path) -> bool:
    """``"pkg.module:callable"`` (rather than a TorchScript file path)."""
    return isinstance(target, str) and bool(_FACTORY.match(target))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def build_factory(factory: str) -> Any:
    """Call ``"pkg.module:callable"`` and check it gives a torch module (a factory's errors
    become one line); shared by ``models convert torch`` and training backbones."""
    import torch

    from agebench.core.registry import resolve_target

    target = resolve_target(factory)
    if not callable(target):
        raise AgebenchError(f"{factory}: is {type(target).__name__}, not callable")
    try:
        module = target()
    except Exception as error:
        raise AgebenchError(
            f"{factory}() raised {type(error).__name__}: {_first_line(error)}"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise AgebenchError(f"{factory}() gave {type(module).__name__}, not a torch.nn.Module")
    return module


def _load_torchscript(path: Path, trust: bool) -> Any:
    import torch

    if not trust:
        raise AgebenchError(
            f"{path}: a TorchScript file is a program, and loading it runs it; pass "
            "--trust-torchscript only if you trust its origin (or give a module factory "
            "'pkg.module:build' with --weights)"
        )
    if not path.is_file():
        raise AgebenchError(f"{path}: TorchScript file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecated, and still the way
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise AgebenchError(
            f"{path}: not a loadable TorchScript file: {_first_line(error)}"
        ) from None


def _load_weights(module: Any, weights: Path) -> None:
    from agebench.build.sources import load_torch_state

    state = load_torch_state(weights)
    try:
        result = module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        missing = sorted(set(module.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(module.state_dict()))
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (first {missing[0]!r})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} (first {unexpected[0]!r})")
        if not detail:  # same keys, other shapes
            detail.append(_first_line(error).split(":", 1)[-1].strip()[:160])
        raise AgebenchError(
            f"{weights}: does not fit the module (strict load): {'; '.join(detail)}"
        ) from None
    del result


def _as_outputs(value: Any, names: Sequence[str] | None, where: str) -> dict[str, Any]:
    import torch

    if isinstance(value, torch.Tensor):
        values = [value]
    elif isinstance(value, Mapping):
        if names is None:
            names = [str(k) for k in value]
        values = list(value.values())
    elif isinstance(value, list | tuple):
        values = list(value)
    else:
        raise AgebenchError(f"{where}: forward returned {type(value).__name__}, not tensors")
    if not all(isinstance(v, torch.Tensor) for v in values):
        raise AgebenchError(f"{where}: forward must return tensors (or a tuple or dict of them)")
    if names is None:
        names = ["output"] if len(values) == 1 else [f"output{i}" for i in range(len(values))]
    if len(names) != len(values):
        raise AgebenchError(
            f"{where}: forward returns {len(values)} outputs but {len(names)} names were "
            f"given ({', '.join(names)})"
        )
    return dict(zip(names, values, strict=True))


def convert_torch(
    factory: str | Path,
    weights: Path | None,
    onnx_path: Path,
    *,
    input_shape: Sequence[int],
    input_name: str = "images",
    output_names: Sequence[str] | None = None,
    trust_torchscript: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Conversion:
    """Export a module (from ``factory`` or a TorchScript path) to ``onnx_path``.

    ``input_shape`` is the graph input's shape including a batch dimension (its value is
    only used for tracing: the exported batch dimension is symbolic, ``N``). Output names
    default to ``output`` (or ``output0``, ``output1``... for several outputs; a dict's keys
    for a dict).
    """
    import torch

    shape = [int(v) for v in input_shape]
    if len(shape) < 2 or any(v < 1 for v in shape):
        raise AgebenchError(f"input shape {input_shape!r}: need a batch dimension and sizes >= 1")
    origin: dict[str, str | bool]  # where the module came from, for the conversion's notes
    if is_factory(factory):
        module = build_factory(str(factory))
        origin = {"factory": str(factory)}
    else:
        module = _load_torchscript(Path(factory), trust_torchscript)
        origin = {"torchscript": str(factory), "torchscript_trusted": True}
    if weights is not None:
        _load_weights(module, weights)
    module.eval()
    generator = torch.Generator().manual_seed(0)
    dummy = torch.rand(*shape, generator=generator) * 2.0 - 1.0
    with torch.no_grad():
        outputs = _as_outputs(module(dummy), output_names, str(factory))
    names = list(outputs)
    try:
        data = export_torchscript(
            module, dummy, input_name=input_name, output_names=names, opset=opset
        )
    except Exception as error:
        raise AgebenchError(f"{factory}: torch.onnx.export failed: {_first_line(error)}") from None
    Path(onnx_path).write_bytes(data)

    def reference(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = _as_outputs(module(torch.from_numpy(np.ascontiguousarray(x))), names, "")
        return {name: value.detach().cpu().numpy() for name, value in out.items()}

    from agebench.models.hashing import sha256_file

    notes: dict[str, Any] = {
        **origin,
        "exporter": "torch.onnx.export (TorchScript-based), dynamic batch",
        "torch": torch.__version__,
        "opset": opset,
        "input_shape": shape,
    }
    if weights is not None:
        notes["weights"] = Path(weights).name
        notes["weights_sha256"] = sha256_file(Path(weights))
    return Conversion(onnx_path, reference, notes)
