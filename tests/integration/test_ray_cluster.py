"""``--executor ray`` on a simulated multi-node cluster (``ray.cluster_utils.Cluster``: three
raylets on this machine, one CPU each), joined by address as a real cluster is.

Predict and eval through the public API, as a user would, against the local executor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import agebench
from tests.integration.test_ray_executor import _group_photos, assert_same_run

ray = pytest.importorskip("ray", reason="the ray extra (scripts/setup.sh installs it)")
cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    if ray.is_initialized():
        ray.shutdown()
    cluster = cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster.address
    ray.shutdown()
    cluster.shutdown()


def test_detection_on_three_nodes(address: str, face_chips: list[Path], tmp_path: Path):
    """Composed multi-face photos, faces found by MTCNN on the workers of every node."""
    src = _group_photos(face_chips, tmp_path / "groups")
    # the reference is the command a user runs, in a process of its own: in a long test
    # session one face of nine (an age at a rounding boundary, 34.8015) once came out 0.001
    # apart from the workers' fresh processes, which no isolated run reproduces
    local = tmp_path / "local"
    command = ["predict", str(src), "--out", str(local)]
    # two photos a chunk: MTCNN detects a chunk's photos together
    command += ["--batch-size", "2"]
    subprocess.run([sys.executable, "-m", "agebench", "-q", *command], check=False)
    on_cluster = agebench.predict(
        src, tmp_path / "cluster", executor="ray", ray_address=address, batch_size=2
    )
    assert_same_run(local, tmp_path / "cluster")
    faces = json.loads((local / "summary.json").read_text())["counts"]["faces"]
    assert on_cluster.summary["counts"]["faces"] == faces >= 9


def test_predict_and_eval_on_three_nodes(address: str, shared_faces: Path, tmp_path: Path):
    local = agebench.predict(shared_faces, tmp_path / "local", faces="none", batch_size=8)
    on_cluster = agebench.predict(
        shared_faces,
        tmp_path / "cluster",
        faces="none",
        batch_size=8,
        executor="ray",
        ray_address=address,
    )
    assert_same_run(tmp_path / "local", tmp_path / "cluster")
    plan = on_cluster.summary["execution"]["ray"]
    assert plan["nodes"] == 3 and plan["cluster_cpus"] == 3
    assert (plan["stages"], plan["prepare_workers"]) == ("fused", 3)
    assert on_cluster.summary["counts"] == local.summary["counts"]

    common = {"out_root": tmp_path / "reports", "n_boot": 200, "batch_size": 8}
    scored = agebench.evaluate("utkface", shared_faces, out=tmp_path / "e-local", **common)
    on_ray = agebench.evaluate(  # a model actor and two decoding workers, as with GPUs
        "utkface",
        shared_faces,
        out=tmp_path / "e-ray",
        executor="ray",
        inference_actors=1,
        **common,
    )
    assert on_ray.summary["execution"]["ray"]["prepare_workers"] == 2
    assert on_ray.summary["metrics"] == scored.summary["metrics"]
    assert (tmp_path / "e-ray" / "predictions.jsonl").read_text() == (
        tmp_path / "e-local" / "predictions.jsonl"
    ).read_text()
