"""The Ray executor's resource plan and its user errors, without starting Ray."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from agebench.cli import main
from agebench.core.config import ClusterConfig
from agebench.core.errors import AgebenchError
from agebench.runner.ray_executor import RAY_MISSING, import_ray, plan_resources

RAY = ClusterConfig(executor="ray")


def test_cpu_cluster_fuses_the_stages_one_worker_per_cpu():
    """No GPU: each worker decodes and runs the model, as each local thread does."""
    plan = plan_resources(RAY, "auto", nodes=1, cpus=2, gpus=0)
    assert (plan.fused, plan.prepare_workers, plan.inference_actors) == (True, 2, 0)
    assert plan.describe()["stages"] == "fused"
    plan = plan_resources(RAY, "auto", nodes=4, cpus=64, gpus=0, workers=10)
    assert (plan.fused, plan.prepare_workers) == (True, 10)
    halves = plan_resources(
        ClusterConfig(executor="ray", cpus_per_worker=0.5), "cpu", nodes=1, cpus=1, gpus=0
    )
    assert halves.prepare_workers == 2


def test_asking_for_inference_actors_on_cpus_splits_the_stages():
    cluster = ClusterConfig(executor="ray", inference_actors=1)
    plan = plan_resources(cluster, "auto", nodes=3, cpus=3, gpus=0)
    assert (plan.fused, plan.inference_actors, plan.prepare_workers) == (False, 1, 2)
    assert plan.describe()["stages"] == "split"


def test_gpu_cluster_one_actor_per_gpu_unless_the_device_is_cpu():
    plan = plan_resources(RAY, "auto", nodes=2, cpus=32, gpus=4)
    assert (plan.inference_actors, plan.gpus_per_actor, plan.cpus_per_actor) == (4, 1.0, 1.0)
    assert plan.prepare_workers == 28
    halves = plan_resources(
        ClusterConfig(executor="ray", gpus_per_worker=0.5), "auto", nodes=1, cpus=16, gpus=1
    )
    assert (halves.inference_actors, halves.gpus_per_actor) == (2, 0.5)
    on_cpu = plan_resources(RAY, "cpu", nodes=2, cpus=32, gpus=4)
    assert on_cpu.fused and on_cpu.gpus_per_actor == 0.0 and on_cpu.prepare_workers == 32


def test_options_win_and_workers_count_decoders():
    cluster = ClusterConfig(executor="ray", inference_actors=2, cpus_per_worker=2)
    plan = plan_resources(cluster, "auto", nodes=1, cpus=16, gpus=0, workers=3)
    assert (plan.inference_actors, plan.cpus_per_actor, plan.prepare_workers) == (2, 2.0, 3)


def test_more_than_the_cluster_has_is_an_error_not_a_hang():
    with pytest.raises(AgebenchError, match=r"need more than the cluster has \(2 CPUs"):
        plan_resources(
            ClusterConfig(executor="ray", inference_actors=2), "auto", nodes=1, cpus=2, gpus=0
        )
    with pytest.raises(AgebenchError, match=r"3 worker\(s\) x 1 CPU need more"):
        plan_resources(RAY, "auto", nodes=1, cpus=2, gpus=0, workers=3)
    with pytest.raises(AgebenchError, match="the Ray cluster has no GPU"):
        plan_resources(RAY, "cuda", nodes=1, cpus=8, gpus=0)


def test_config_checks_its_values():
    with pytest.raises(ValueError, match="executor='spark'"):
        ClusterConfig(executor="spark")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ray_address: only with executor='ray'"):
        ClusterConfig(ray_address="auto")
    assert ClusterConfig.from_options({"executor": "ray", "other": 1}) == RAY
    assert "window" not in RAY.as_options()


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(AgebenchError) as error:
        import_ray()
    assert str(error.value) == RAY_MISSING and "agebench[ray]" in RAY_MISSING


def test_cli_ray_options_need_the_ray_executor(tmp_path):
    result = CliRunner().invoke(
        main, ["predict", str(tmp_path), "--ray-address", "auto", "--inference-actors", "2"]
    )
    assert result.exit_code == 2
    assert "--ray-address, --inference-actors: only with --executor ray" in result.output
    result = CliRunner().invoke(main, ["eval", "--help"])
    assert "--executor [local|ray]" in result.output and "--gpus-per-worker" in result.output
