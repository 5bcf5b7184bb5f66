"""onnxruntime settings measured per model and machine, cached, and one place that picks the
backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agebench.core.errors import AgebenchError
from agebench.models import tuning
from agebench.models.manifest import load_manifest
from agebench.models.ort_engine import OPT_LEVELS
from agebench.models.predictor import Predictor, choose_backend
from tests.fixtures.tiny_models import REPO, write_manifest

CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AGEBENCH_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture()
def spec(tmp_path: Path):
    return load_manifest(write_manifest(tmp_path))


def test_manifest_settings_give_one_caller_every_core(spec, home: Path):
    predictor = Predictor(spec, device="cpu", threads=2)
    settings = predictor.execution
    assert settings["source"] == "manifest" and settings["graph_optimization"] == "basic"
    assert settings["intra_op_threads"] == 2 and settings["lanes"] == 1
    assert not (home / "cache" / "ort-tuning.json").exists()


def test_tuning_measures_every_level_and_caches_the_choice(spec, home: Path):
    first = Predictor(spec, device="cpu", threads=2, tuning="auto")
    assert first.execution["source"] == "tuned"
    measured = first.tuning_measured
    assert measured is not None
    assert {key.split()[0] for key in measured} == set(OPT_LEVELS)
    assert all(v is not None and v > 0 for v in measured.values())
    cache = json.loads((home / "cache" / "ort-tuning.json").read_text())
    (entry,) = cache.values()
    assert entry["model_sha256"] == first.sha256 and entry["cores"] == 2
    second = Predictor(spec, device="cpu", threads=2, tuning="auto")
    assert second.execution["source"] == "tuning cache"
    assert second.tuning_measured is None  # nothing measured again
    for key in ("graph_optimization", "lanes", "intra_op_threads"):
        assert second.execution[key] == first.execution[key]
    # another core count is another machine: measured afresh
    assert Predictor(spec, device="cpu", threads=1, tuning="auto").execution["source"] == "tuned"
    again = Predictor(spec, device="cpu", threads=2, tuning="retune")
    assert again.execution["source"] == "tuned"
    faces = np.random.default_rng(1).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    assert first.predict(faces).fields["age"] == pytest.approx(
        Predictor(spec, device="cpu").predict(faces).fields["age"], abs=1e-5
    )


def test_a_level_that_changes_outputs_is_never_taken(
    spec, home: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(tuning, "_close", lambda a, b: False)
    predictor = Predictor(spec, device="cpu", threads=2, tuning="auto")
    assert predictor.execution["graph_optimization"] == spec.runtime.graph_optimization
    measured = predictor.tuning_measured or {}
    others = [v for k, v in measured.items() if not k.startswith(spec.runtime.graph_optimization)]
    assert others and all(v is None for v in others)  # measured as disagreeing


def test_an_unreadable_cache_is_measured_again(spec, home: Path):
    cache = home / "cache" / "ort-tuning.json"
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert Predictor(spec, device="cpu", tuning="auto").execution["source"] == "tuned"
    assert json.loads(cache.read_text())  # rewritten whole


def test_close_compares_relative_to_magnitude():
    base = [np.array([1000.0, 1.0], dtype=np.float32)]
    assert tuning._close([base[0] + 0.05], base)  # 5e-5 of 1000
    assert not tuning._close([base[0] + 0.5], base)
    assert not tuning._close([base[0][:1]], base)  # shape differs


@pytest.mark.parametrize(
    ("device", "backend", "ort", "torch_cuda", "expected"),
    [
        ("cpu", "auto", CUDA, True, ("onnxruntime", CPU)),
        ("auto", "auto", CPU, False, ("onnxruntime", CPU)),
        ("auto", "auto", CUDA, True, ("onnxruntime", CUDA)),
        ("auto", "auto", CPU, True, ("torch", [])),
        ("cuda", "auto", CPU, True, ("torch", [])),
        ("cuda", "auto", CUDA, False, ("onnxruntime", CUDA)),
        ("auto", "torch", CPU, False, ("torch", [])),
        ("auto", "onnxruntime", CPU, True, ("onnxruntime", CPU)),
    ],
)
def test_backend_choice_prefers_onnxruntime_gpu_then_torch_cuda_then_cpu(
    device, backend, ort, torch_cuda, expected
):
    assert choose_backend(device, backend, ort, torch_cuda) == expected


@pytest.mark.parametrize(
    ("device", "backend", "torch_cuda"),
    [("cuda", "auto", False), ("cuda", "torch", False), ("cuda", "onnxruntime", True)],
)
def test_a_gpu_that_is_not_there_is_one_clear_error(device, backend, torch_cuda):
    with pytest.raises(AgebenchError, match="--device cuda"):
        choose_backend(device, backend, CPU, torch_cuda)


def test_a_cpu_run_does_not_import_torch():
    """torch costs about 640 MB resident: ready-crop runs on a machine without a GPU driver
    never import it (detection does, for MTCNN)."""
    code = (
        "import sys\n"
        "from agebench.models.catalog import ModelCatalog\n"
        "from agebench.models.predictor import Predictor\n"
        "Predictor(ModelCatalog().get('dlib-age-v1'), device='auto')\n"
        "import agebench.cli, agebench.runner.pipeline, agebench.runner.evaluate\n"
        "print('torch' in sys.modules)\n"
    )
    if any(Path(n).exists() for n in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")):
        pytest.skip("this machine has a GPU driver: torch is imported to ask it")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert done.stdout.strip() == "False"
