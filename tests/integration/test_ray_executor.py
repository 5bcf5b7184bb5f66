"""``--executor ray`` against the local executor on real faces, on a local Ray instance.

The local executor is the reference: every record the Ray executor writes must be the local
one's (ages equal to 1e-6 years, the same run identity), whatever Ray does on the way:
worker deaths, a driver interrupted and resumed by the other executor, images fed a window at a
time. One Ray instance (2 CPUs, as CI has) serves the module; the multi-node cluster is in
``test_ray_cluster.py``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agebench.core.config import ClusterConfig, ExecutionConfig
from agebench.models.catalog import DEFAULT_MODEL, resolve_model
from agebench.runner.config import PredictConfig
from agebench.runner.evaluate import EvalConfig, run_eval
from agebench.runner.faces import Job, PreparedImage
from agebench.runner.pipeline import run_predict
from agebench.runner.ray_workers import FAULT_ENV
from agebench.runner.sink import read_image_json
from agebench.runner.stack import PredictStack
from tests.conftest import chip_age

ray = pytest.importorskip("ray", reason="the ray extra (scripts/setup.sh installs it)")

pytestmark = pytest.mark.slow

RAY = ClusterConfig(executor="ray")
#: decode/detect workers and a model actor of their own, as on a GPU cluster
SPLIT = ClusterConfig(executor="ray", inference_actors=1)
#: small batches so that 48 images make several, and a fault can land mid-run
SMALL = ExecutionConfig(batch_size=8)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The local Ray instance, its workers told where the fault tests arm their faults."""
    folder = tmp_path_factory.mktemp("faults")
    previous = os.environ.get(FAULT_ENV)
    os.environ[FAULT_ENV] = str(folder)  # the workers Ray starts inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield folder
    ray.shutdown()
    if previous is None:
        os.environ.pop(FAULT_ENV, None)
    else:
        os.environ[FAULT_ENV] = previous


def _records(out: Path) -> dict[str, dict[str, Any]]:
    """The per-image records under ``out`` (by their schema: not run.json, summary.json...)."""
    return {
        path.relative_to(out).as_posix(): record
        for path in sorted(out.rglob("*.json"))
        if (record := read_image_json(path)) is not None
    }


def assert_same_run(local: Path, other: Path) -> None:
    """Record for record the same outputs, ages within 1e-6 years."""
    ours, theirs = _records(local), _records(other)
    assert ours.keys() == theirs.keys() and ours
    for name, record in ours.items():
        twin = theirs[name]
        ages = [f["age"] for f in record["faces"]]
        assert [f["age"] for f in twin["faces"]] == pytest.approx(ages, abs=1e-6), name
        assert twin == record, name
    assert (local / "predictions.jsonl").read_text() == (other / "predictions.jsonl").read_text()
    summary = json.loads((other / "summary.json").read_text())
    assert summary["run"] == json.loads((local / "summary.json").read_text())["run"]


def _predict(
    src: Path, out: Path, cluster: ClusterConfig = RAY, progress: Any = None, **kw: Any
) -> dict[str, Any]:
    config = PredictConfig(input=src, out=out, cluster=cluster, **kw)
    return run_predict(config, progress).summary


@pytest.fixture(scope="module")
def chips_reference(shared_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    _predict(shared_faces, out, ClusterConfig(), faces="none", execution=SMALL)
    return out


@pytest.mark.parametrize(("cluster", "stages"), [(RAY, "fused"), (SPLIT, "split")])
def test_predict_on_ray_is_the_local_run_record_for_record(
    cluster: ClusterConfig,
    stages: str,
    faults: Path,
    shared_faces: Path,
    chips_reference: Path,
    tmp_path: Path,
):
    summary = _predict(shared_faces, tmp_path / "ray", cluster, faces="none", execution=SMALL)
    assert_same_run(chips_reference, tmp_path / "ray")
    execution = summary["execution"]
    assert execution["executor"] == "ray" and execution["ray"]["stages"] == stages
    assert execution["ray"]["nodes"] == 1 and execution["ray"]["cluster_cpus"] == 2
    # the engine is the actors', not the driver's: a fused worker runs one thread on one CPU
    lanes = (execution["engine"]["lanes"], execution["engine"]["intra_op_threads"])
    assert lanes == (1, 1) if stages == "fused" else lanes[0] >= 1
    assert execution["ray"]["startup_seconds"] == 0.0  # joined the module's instance
    assert summary["counts"]["images_ok"] == 48


def _group_photos(face_chips: list[Path], folder: Path) -> Path:
    """Composed photos of several real faces each, one chip alone, and one broken file."""
    folder.mkdir()
    for index, ages in enumerate(((3, 28, 75), (12, 45), (60, 20, 33))):
        picks = [min(face_chips, key=lambda p, a=a: abs(chip_age(p) - a)) for a in ages]
        canvas = Image.new("RGB", (1200, 560), (128, 120, 110))
        for slot, chip in enumerate(picks):
            face = Image.open(chip).convert("RGB").resize((300, 300))
            canvas.paste(face, (40 + slot * 390, 100 + 60 * (slot % 2)))
        canvas.save(folder / f"group-{index}.jpg", quality=95)
    shutil.copy(face_chips[0], folder / "alone.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_detection_on_ray_matches_local_on_multi_face_photos(
    faults: Path, face_chips: list[Path], tmp_path: Path
):
    src = _group_photos(face_chips, tmp_path / "groups")
    local = _predict(src, tmp_path / "local", ClusterConfig())
    on_ray = _predict(src, tmp_path / "ray", SPLIT)
    assert_same_run(tmp_path / "local", tmp_path / "ray")
    assert on_ray["counts"]["faces"] == local["counts"]["faces"] >= 9
    assert on_ray["counts"]["images_failed"] == 1
    assert on_ray["failures"][0]["image"] == "broken.jpg"


def test_eval_on_ray_scores_what_local_scores(faults: Path, shared_faces: Path, tmp_path: Path):
    common = {"bench": "utkface", "root": shared_faces, "n_boot": 200, "execution": SMALL}
    local = run_eval(EvalConfig(out=tmp_path / "local", **common))
    on_ray = run_eval(EvalConfig(out=tmp_path / "ray", cluster=RAY, **common))
    assert (tmp_path / "local" / "predictions.jsonl").read_text() == (
        tmp_path / "ray" / "predictions.jsonl"
    ).read_text()
    assert on_ray.summary["metrics"] == local.summary["metrics"]
    assert on_ray.summary["benchmark"] == local.summary["benchmark"]
    assert on_ray.summary["execution"]["executor"] == "ray"


@pytest.mark.parametrize(
    ("stage", "cluster"), [("infer", SPLIT), ("prepare", SPLIT), ("infer", RAY)]
)
def test_a_worker_killed_mid_run_is_retried_no_image_lost_or_written_twice(
    stage: str,
    cluster: ClusterConfig,
    faults: Path,
    shared_faces: Path,
    chips_reference: Path,
    tmp_path: Path,
):
    (faults / f"{stage}.arm").write_text("3")  # the first worker to reach its 3rd batch dies
    done: list[int] = []
    summary = _predict(
        shared_faces,
        tmp_path / "ray",
        cluster,
        faces="none",
        execution=SMALL,
        progress=lambda event, amount: done.append(amount) if event == "advance" else None,
    )
    assert (faults / f"{stage}.fired").is_file(), "the fault never fired: the test proves nothing"
    (faults / f"{stage}.fired").unlink()
    assert sum(done) == len(done) == 48  # each image handed over exactly once
    assert summary["counts"]["processed_this_run"] == 48
    assert_same_run(chips_reference, tmp_path / "ray")


class _Interrupt(Exception):
    pass


def _interrupted(src: Path, out: Path, cluster: ClusterConfig, after: int) -> None:
    seen = 0

    def progress(event: str, amount: int) -> None:
        nonlocal seen
        if event == "advance":
            seen += amount
            if seen >= after:
                raise _Interrupt

    with pytest.raises(_Interrupt):
        run_predict(
            PredictConfig(input=src, out=out, faces="none", execution=SMALL, cluster=cluster),
            progress,
        )


@pytest.mark.parametrize(("first", "then"), [(ClusterConfig(), RAY), (RAY, ClusterConfig())])
def test_an_interrupted_run_is_resumed_by_either_executor(
    first: ClusterConfig,
    then: ClusterConfig,
    faults: Path,
    shared_faces: Path,
    chips_reference: Path,
    tmp_path: Path,
):
    out = tmp_path / "out"
    _interrupted(shared_faces, out, first, after=12)
    kept = len(_records(out))
    assert 12 <= kept < 48
    summary = _predict(shared_faces, out, then, faces="none", execution=SMALL)
    assert summary["counts"]["skipped_resumed"] == kept
    assert summary["counts"]["processed_this_run"] == 48 - kept
    assert_same_run(chips_reference, out)


def test_the_driver_hands_ray_one_window_at_a_time(faults: Path, face_chips: list[Path]):
    """The driver's memory does not grow with the images: it pulls a window of jobs, and
    pulls the next only once that window's results are written."""
    from agebench.runner.ray_executor import RayRunner

    stack = PredictStack.build(resolve_model(DEFAULT_MODEL), "none", ExecutionConfig())
    runner = RayRunner(stack, ClusterConfig(executor="ray", window=10), batch_size=4)
    pulled = 0
    at_done: list[int] = []

    def jobs() -> Iterator[Job]:
        nonlocal pulled
        for path in face_chips[:25]:
            pulled += 1
            yield Job(path, Path(path.name))

    def on_done(item: PreparedImage) -> None:
        at_done.append(pulled)

    runner.run(jobs(), on_done)
    assert len(at_done) == 25
    assert all(seen <= 10 * (index // 10 + 1) for index, seen in enumerate(at_done)), at_done
    assert runner.describe()["ray"]["first_result_seconds"] is not None
