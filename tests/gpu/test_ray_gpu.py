"""The Ray executor's GPU actors (``num_gpus=1``), on a machine with CUDA and the ray extra.

A local Ray instance that sees the GPU; predict with ``--device cuda`` on Ray must write what
the local executor writes on the same GPU, and its inference actor must hold the GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agebench.core.config import ClusterConfig, ExecutionConfig
from agebench.runner.config import PredictConfig
from agebench.runner.pipeline import run_predict
from tests.integration.test_ray_executor import assert_same_run

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")


def test_gpu_actor_writes_what_the_local_gpu_run_writes(shared_faces: Path, tmp_path: Path):
    cuda = ExecutionConfig(device="cuda", batch_size=16)
    run_predict(PredictConfig(input=shared_faces, out=tmp_path / "local", execution=cuda))
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_predict(
            PredictConfig(
                input=shared_faces,
                out=tmp_path / "ray",
                execution=cuda,
                cluster=ClusterConfig(executor="ray"),
            )
        ).summary
    finally:
        ray.shutdown()
    plan = summary["execution"]["ray"]
    assert (plan["inference_actors"], plan["gpus_per_actor"]) == (1, 1.0)
    assert_same_run(tmp_path / "local", tmp_path / "ray")
