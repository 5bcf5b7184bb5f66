"""``agebench compare`` on synthetic finished runs (folders with summary.json and
predictions.jsonl): pairing, the intersection rule, refusals, ranking, reports, schema, CLI."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from agebench.cli import main
from agebench.cli.compare import compare as compare_command
from agebench.comparison.runs import load_run
from agebench.comparison.statistics import COMPARISON_SCHEMA, compare_runs
from agebench.core import stats
from agebench.core.errors import AgebenchError
from agebench.core.metrics import compute_metrics
from agebench.models.catalog import DEFAULT_MODEL, resolve_model
from agebench.report.write import render_compare_markdown
from agebench.runner.compare import run_compare

N = 40
AGES = [float(3 + (i * 7) % 70) for i in range(N)]
#: error patterns (pred - true) of three synthetic models
ERRORS = {
    "good": [((i % 5) - 2) * 1.0 for i in range(N)],
    "twin": [((i % 5) - 2) * 1.0 + (0.5 if i % 2 else -0.5) for i in range(N)],
    "poor": [((i % 7) - 3) * 3.0 + 1.0 for i in range(N)],
}


def make_rows(errors: list[float], failures: dict[int, str] | None = None) -> list[dict]:
    failures = failures or {}
    rows = []
    for i, (age, err) in enumerate(zip(AGES, errors, strict=True)):
        status = failures.get(i, "ok")
        no_pred = status == "no_prediction"
        status = "ok" if no_pred else status
        rows.append(
            {
                "image": f"faces/{i:03d}.jpg",
                "source": f"faces/{i:03d}.jpg",
                "status": status,
                "error": None if status == "ok" else f"{status} here",
                "age": age,
                "targets": {},
                "age_std": None,
                "age_group": None,
                "subject": f"s{i}",
                "fold": str(i % 3),
                "split": None,
                "attributes": {"gender": "FM"[i % 2]},
                "pred_age": None if status != "ok" or no_pred else age + err,
                "pred_std": None,
                "pred_group": None,
                "face_box": None,
                "face_score": None,
                "image_sha256": f"{i:064x}",
            }
        )
    return rows


def write_run(
    folder: Path,
    rows: list[dict],
    *,
    model: str = "good",
    sha: str | None = None,
    bench: str = "toy",
    version: str = "1",
    protocol: str = "all",
    split: str | None = None,
    fingerprint: str = "f0" * 32,
    files_sha256: str = "ab" * 32,
    faces: str = "none",
    images_per_second: float | None = 25.0,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    statuses = [r["status"] for r in rows]
    summary = {
        "schema": "agebench.eval-summary/1",
        "benchmark": {
            "name": bench,
            "title": "Toy benchmark",
            "version": version,
            "protocol": protocol,
            "split": split,
            "root": "/data/toy",
            "fingerprint": fingerprint,
            "files_sha256": files_sha256,
            "n_label_files": 0,
            "n_images": len(rows),
            "options": {},
        },
        "model": {
            "name": model,
            "sha256": sha or (model.encode().hex() * 64)[:64],
            "framework": "onnx",
            "per_fold": None,
        },
        "faces": {"mode": faces, "ready_crop": "tight", "reconciliation": None},
        "execution": {"device": "cpu", "onnx_provider": "CPUExecutionProvider", "batch_size": 8},
        "counts": {
            "records": len(rows),
            "scored": statuses.count("ok"),
            "no_face": statuses.count("no_face"),
            "failed": statuses.count("failed"),
            "missing": statuses.count("missing"),
            "label_problems": 0,
            "processed_this_run": len(rows),
        },
        "metrics": {"age": compute_metrics(rows, n_boot=200)},
        "group_metrics": None,
        "problems": [],
        "timing": {"seconds": 1.6, "images_per_second": images_per_second},
        "provenance": {"agebench_version": "0.1.0", "created": "2025-01-01T00:00:00+00:00"},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture
def three(tmp_path: Path) -> list[Path]:
    """good (fails on record 3), twin (no prediction on record 7), poor (all scored)."""
    return [
        write_run(tmp_path / "runs" / "good", make_rows(ERRORS["good"], {3: "no_face"})),
        write_run(
            tmp_path / "runs" / "twin",
            make_rows(ERRORS["twin"], {7: "no_prediction"}),
            model="twin",
            images_per_second=80.0,
        ),
        write_run(tmp_path / "runs" / "poor", make_rows(ERRORS["poor"]), model="poor"),
    ]


def _compare(paths: list[Path], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("n_boot", 300)
    kwargs.setdefault("catalog", None)
    return compare_runs([load_run(p) for p in paths], **kwargs)


def _inter(errors: list[float]) -> np.ndarray:
    return np.abs([e for i, e in enumerate(errors) if i not in (3, 7)])


# --- pairing and the intersection ----------------------------------------------------------


def test_a_failure_in_one_model_drops_the_record_for_all(three: list[Path]):
    c = _compare(three)
    inter = c["intersection"]
    assert inter["n_records"] == N and inter["n_label_rows"] == N
    assert inter["n_scored_by_all"] == N - 2 and inter["n_excluded"] == 2
    assert inter["n_failed_records"] == 2 and "intersection" in inter["rule"]
    models = {m["label"]: m for m in c["models"]}
    for label in ("good", "twin", "poor"):
        m = models[label]
        assert m["metrics"]["n_scored"] == N - 2
        assert m["mae"] == pytest.approx(_inter(ERRORS[label]).mean())
    # each model's own full-set numbers come from its summary, beside
    assert models["good"]["full_set"]["n_scored"] == N - 1
    assert models["poor"]["full_set"]["mae"] == pytest.approx(np.abs(ERRORS["poor"]).mean())
    assert models["good"]["failures"]["records"] == 1
    assert models["good"]["failures"]["by_status"]["no_face"] == 1
    assert models["twin"]["failures"]["by_status"]["no_prediction"] == 1
    assert models["poor"]["failures"]["records"] == 0
    assert models["poor"]["failures"]["scored_but_excluded"] == 2
    failures = {f["image"]: f for f in c["failures"]}
    assert set(failures) == {"faces/003.jpg", "faces/007.jpg"}
    assert failures["faces/003.jpg"]["failed"] == ["good"]
    assert failures["faces/003.jpg"]["status"] == {"good": "no_face", "twin": "ok", "poor": "ok"}
    assert failures["faces/003.jpg"]["error"] == {"good": "no_face here"}
    assert failures["faces/007.jpg"]["status"]["twin"] == "no_prediction"


def test_pairs_are_record_by_record(three: list[Path], tmp_path: Path):
    # the same rows, shuffled in one file: pairing is by image + source, not by line
    rows = make_rows(ERRORS["poor"])
    shuffled = write_run(tmp_path / "shuffled", rows[::-1], model="poor")
    c = _compare([three[0], three[1], shuffled])
    straight = _compare(three)
    assert c["pairs"][1]["mae_diff"] == pytest.approx(straight["pairs"][1]["mae_diff"])
    assert c["pairs"][1]["wilcoxon"]["p"] == pytest.approx(straight["pairs"][1]["wilcoxon"]["p"])


def test_pair_statistics(three: list[Path]):
    c = _compare(three, seed=4)
    a, b = _inter(ERRORS["good"]), _inter(ERRORS["poor"])
    pair = next(p for p in c["pairs"] if (p["a"], p["b"]) == ("good", "poor"))
    assert pair["n"] == N - 2
    assert pair["mae_diff"] == pytest.approx(a.mean() - b.mean())
    # the shared bootstrap of the comparison is the pairwise one, with the same seed
    alone = stats.paired_bootstrap_mae_diff(a, b, n_boot=300, seed=4)
    assert pair["mae_diff_ci"] == pytest.approx(alone["ci"], abs=1e-12)
    assert pair["wilcoxon"]["p"] == pytest.approx(scipy_stats.wilcoxon(a, b).pvalue)
    holm = stats.holm([p["wilcoxon"]["p"] for p in c["pairs"]])
    assert [p["wilcoxon"]["p_holm"] for p in c["pairs"]] == pytest.approx(holm)
    assert pair["closer"]["a_closer"] == int(np.sum(a < b - 1e-9))
    ages = np.array([age for i, age in enumerate(AGES) if i not in (3, 7)])
    pred_a = ages + np.array([e for i, e in enumerate(ERRORS["good"]) if i not in (3, 7)])
    pred_b = ages + np.array([e for i, e in enumerate(ERRORS["poor"]) if i not in (3, 7)])
    assert pair["agreement"]["mean_abs_diff"] == pytest.approx(np.abs(pred_a - pred_b).mean())
    assert pair["agreement"]["pearson_r"] == pytest.approx(np.corrcoef(pred_a, pred_b)[0, 1])
    # the matrix holds row - column differences and symmetric p-values
    m = c["matrix"]
    assert m["models"] == ["good", "twin", "poor"]
    assert m["mae_diff"][0][2] == pytest.approx(pair["mae_diff"])
    assert m["mae_diff"][2][0] == pytest.approx(-pair["mae_diff"])
    assert m["p_holm"][0][2] == m["p_holm"][2][0] == pair["wilcoxon"]["p_holm"]
    assert m["mae_diff"][1][1] is None


def test_ranking_and_significance_groups(three: list[Path]):
    c = _compare(three)
    ranking = c["ranking"]
    assert [e["model"] for e in ranking["order"]] == ["good", "twin", "poor"]
    assert ranking["alpha"] == 0.05
    # good and twin differ by +-0.5 on alternate records: not distinguishable; poor is worse
    assert [g["models"] for g in ranking["groups"]] == [["good", "twin"], ["poor"]]
    assert [e["groups"] for e in ranking["order"]] == ["a", "a", "b"]
    assert [e["significant_to_next"] for e in ranking["order"]] == [False, True, None]
    pairs = {(p["a"], p["b"]): p for p in c["pairs"]}
    assert pairs[("good", "twin")]["significant"] is False
    assert pairs[("good", "poor")]["significant"] is True


def test_comparison_json_schema(three: list[Path], tmp_path: Path):
    outcome = run_compare([str(p) for p in three], out_root=tmp_path / "reports", n_boot=200)
    assert outcome.reused == [None, None, None]
    assert outcome.out.parent == tmp_path / "reports"
    assert re.fullmatch(r"compare-[0-9a-f]{12}", outcome.out.name)
    data = json.loads((outcome.out / "comparison.json").read_text())
    assert data["schema"] == COMPARISON_SCHEMA == "agebench.comparison/1"
    assert data["id"] == outcome.out.name.removeprefix("compare-")
    assert {
        "benchmark",
        "settings",
        "runs",
        "intersection",
        "models",
        "pairs",
        "matrix",
        "ranking",
        "failures",
        "provenance",
        "target",
    } <= set(data)
    assert data["target"] == "age"
    assert data["provenance"]["agebench_version"] and "created" in data["provenance"]
    assert data["settings"] | {} == data["settings"] and data["settings"]["p_adjust"] == "holm"
    for run, path in zip(data["runs"], three, strict=True):
        assert run["summary_path"] == str(path / "summary.json")
        assert (
            run["model"]["sha256"]
            == json.loads((path / "summary.json").read_text())["model"]["sha256"]
        )
    assert data["intersection"]["n_scored_by_all"] == N - 2
    assert len(data["pairs"]) == 3 and len(data["failures"]) == 2
    # the same runs in another order: the same folder (the id hashes the sorted folders)
    again = run_compare([str(p) for p in three[::-1]], out_root=tmp_path / "reports", n_boot=200)
    assert again.out == outcome.out


def test_epsilon_and_size(tmp_path: Path):
    def apparent(rows: list[dict]) -> list[dict]:
        for r in rows:
            r["targets"] = {"apparent_age": r["age"] + 1.0}
            r["age_std"] = 3.0
        return rows

    dlib = resolve_model(DEFAULT_MODEL)
    a = write_run(
        tmp_path / "a", apparent(make_rows(ERRORS["good"])), model=DEFAULT_MODEL, sha=dlib.sha256
    )
    b = write_run(tmp_path / "b", apparent(make_rows(ERRORS["poor"])), model="poor")
    c = compare_runs([load_run(a), load_run(b)], n_boot=100)
    models = {m["label"]: m for m in c["models"]}
    assert models[DEFAULT_MODEL]["epsilon_target"] == "apparent_age"
    assert 0 < models[DEFAULT_MODEL]["epsilon_error"] < models["poor"]["epsilon_error"] < 1
    assert models[DEFAULT_MODEL]["model_size_bytes"] == dlib.file.stat().st_size
    assert models["poor"]["model_size_bytes"] is None  # not in the catalog
    markdown = render_compare_markdown(c)
    assert "ε-error" in markdown
    assert f"{models[DEFAULT_MODEL]['epsilon_error']:.4f}" in markdown


# --- refusals --------------------------------------------------------------------------------


def _refused(paths: list[Path], match: str) -> None:
    with pytest.raises(AgebenchError, match=match) as error:
        _compare(paths)
    assert "\n" not in str(error.value)


def test_refuses_different_fingerprints(tmp_path: Path):
    a = write_run(tmp_path / "a", make_rows(ERRORS["good"]))
    b = write_run(tmp_path / "b", make_rows(ERRORS["poor"]), model="poor", fingerprint="0e" * 32)
    _refused([a, b], r"different data \(fingerprints .*good: f0f0f0f0f0f0, poor: 0e0e0e0e0e0e")


def test_refuses_different_benchmarks_versions_splits(tmp_path: Path):
    a = write_run(tmp_path / "a", make_rows(ERRORS["good"]))
    other = write_run(tmp_path / "b", make_rows(ERRORS["poor"]), model="poor", bench="other")
    _refused([a, other], r"different benchmarks \(good: toy, poor: other\)")
    v2 = write_run(tmp_path / "c", make_rows(ERRORS["poor"]), model="poor", version="2")
    _refused([a, v2], r"different benchmark versions \(good: 1, poor: 2\)")
    test = write_run(tmp_path / "d", make_rows(ERRORS["poor"]), model="poor", split="test")
    _refused([a, test], r"different protocols/splits \(good: all/all, poor: all/test\)")


def test_refuses_different_record_sets_and_labels(tmp_path: Path):
    a = write_run(tmp_path / "a", make_rows(ERRORS["good"]))
    fewer = write_run(tmp_path / "b", make_rows(ERRORS["poor"])[:-1], model="poor")
    _refused([a, fewer], r"different record sets \(good: 40 records, poor: 39; 1 only in good")
    relabelled = make_rows(ERRORS["poor"])
    relabelled[5]["age"] += 1
    changed = write_run(tmp_path / "c", relabelled, model="poor")
    _refused([a, changed], r"labels differ \(faces/005.jpg")


def test_refuses_one_run_the_same_run_twice_and_no_common_target(tmp_path: Path):
    a = write_run(tmp_path / "a", make_rows(ERRORS["good"]))
    _refused([a], "at least two runs")
    _refused([a, a], "the same run is given twice")
    b = write_run(tmp_path / "b", make_rows(ERRORS["poor"]), model="poor")
    with pytest.raises(AgebenchError, match="target 'apparent_age' is not scored"):
        _compare([a, b], target="apparent_age")


def test_faces_modes_may_differ_on_the_same_data(tmp_path: Path):
    """--faces none and --faces detect give different fingerprints over the same files."""
    rows = make_rows(ERRORS["good"])
    a = write_run(tmp_path / "a", rows)
    b = write_run(
        tmp_path / "b",
        make_rows(ERRORS["twin"], {0: "no_face"}),
        fingerprint="0d" * 32,
        faces="detect",
    )
    c = _compare([a, b])
    assert [m["label"] for m in c["models"]] == ["good [none]", "good [detect]"]
    assert c["benchmark"]["faces_modes"] == ["detect", "none"]
    assert c["intersection"]["n_scored_by_all"] == N - 1
    other_files = write_run(
        tmp_path / "c",
        make_rows(ERRORS["twin"]),
        model="twin",
        fingerprint="0d" * 32,
        faces="detect",
        files_sha256="cd" * 32,
    )
    _refused([a, other_files], r"different data \(the image and label files\)")


def test_load_run_errors(tmp_path: Path):
    with pytest.raises(AgebenchError, match="no such eval run folder"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AgebenchError, match="not a finished eval run"):
        load_run(tmp_path / "empty")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "predictions.partial.jsonl").write_text("")
    with pytest.raises(AgebenchError, match="interrupted eval"):
        load_run(tmp_path / "partial")
    run = write_run(tmp_path / "run", make_rows(ERRORS["good"]))
    assert load_run(run / "summary.json").path == run  # the summary's path works too
    lines = (run / "predictions.jsonl").read_text().splitlines()
    (run / "predictions.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(AgebenchError, match="39 rows, but its summary counts 40 records"):
        load_run(run)
    (run / "predictions.jsonl").write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(AgebenchError, match="appears twice"):
        load_run(run)
    (run / "predictions.jsonl").write_text("{broken\n")
    with pytest.raises(AgebenchError, match=r"predictions.jsonl:1: not a JSON line"):
        load_run(run)
    (run / "summary.json").write_text(json.dumps({"schema": "something/2"}))
    with pytest.raises(AgebenchError, match="schema 'something/2'"):
        load_run(run)


def test_a_model_without_a_benchmark_is_refused(three: list[Path], tmp_path: Path):
    with pytest.raises(AgebenchError, match=r"not a finished eval run folder.*--bench and --root"):
        run_compare([str(three[0]), "some-model"], out_root=tmp_path / "r")


# --- reports -----------------------------------------------------------------------------------


class _Resources(HTMLParser):
    FETCHING = frozenset(
        {"src", "href", "xlink:href", "data", "action", "poster", "srcset", "background"}
    )

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.references: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in self.FETCHING and value is not None:
                self.references.append((tag, name, value))


def test_report_files_are_written_and_self_contained(three: list[Path], tmp_path: Path):
    import matplotlib
    import matplotlib.pyplot as plt

    before = (matplotlib.get_backend(), plt.get_fignums())
    outcome = run_compare([str(p) for p in three], out_root=tmp_path / "reports", n_boot=200)
    assert (matplotlib.get_backend(), plt.get_fignums()) == before
    names = sorted(p.name for p in outcome.out.iterdir())
    assert names == ["comparison.json", "report.html", "report.md"]  # no temporaries left
    page = (outcome.out / "report.html").read_text()
    parsed = _Resources()
    parsed.feed(page)
    # CS overlay, band bars, predicted-vs-true small multiples, 3 Bland-Altman plots
    assert parsed.tags.count("svg") == 6 and page.count("<figcaption>") == 6
    for banned in ("script", "link", "iframe", "object", "embed", "img"):
        assert banned not in parsed.tags, banned
    for tag, name, value in parsed.references:
        assert tag == "a" or value.startswith(("#", "data:")), (tag, name, value[:60])
    assert "http://" not in page and "https://" not in page and "@import" not in page
    assert all(u.startswith("#") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", page))
    assert "default-src 'none'" in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    c = outcome.comparison
    good = next(m for m in c["models"] if m["label"] == "good")
    lo, hi = good["mae_ci"]
    assert f"<td>{good['mae']:.2f} [{lo:.2f}, {hi:.2f}]</td>" in page
    for heading in ("Ranking", "Pairwise comparisons", "Cumulative score", "MAE by age band"):
        assert f">{heading}<" in page, heading
    for heading in ("By fold", "Agreement between models", "Failures", "Provenance"):
        assert f">{heading}<" in page, heading
    assert "MAE difference (row - column)" in page and "Holm-corrected" in page
    markdown = (outcome.out / "report.md").read_text()
    assert "38 records that every model scored" in markdown
    assert "faces/003.jpg: good: no" in markdown and "| 1 | good | a |" in markdown


def test_report_text_is_escaped(tmp_path: Path):
    a = write_run(tmp_path / "a", make_rows(ERRORS["good"]), model="<script>alert(1)</script>")
    rows = make_rows(ERRORS["poor"], {2: "failed"})
    rows[2]["error"] = "<img src=http://example.org/x.png> | [x](javascript:y)"
    b = write_run(tmp_path / "b", rows, model="poor")
    outcome = run_compare([str(a), str(b)], out_root=tmp_path / "r", n_boot=100)
    page = (outcome.out / "report.html").read_text()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=http://example.org/x.png&gt;" in page
    markdown = (outcome.out / "report.md").read_text()
    assert not re.search(r"(?<!\\)<", markdown)
    assert "](javascript" not in markdown
    # two models: no matrix tables, one Bland-Altman plot
    assert "MAE difference (row - column)" not in page and page.count("<svg") == 4


# --- the command line ------------------------------------------------------------------------


def test_cli_prints_the_ranking(three: list[Path], tmp_path: Path):
    assert main.commands["compare"] is compare_command
    result = CliRunner().invoke(
        main,
        [
            "compare",
            *map(str, three),
            "--out-root",
            str(tmp_path / "reports"),
            "--bootstrap",
            "200",
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "agebench compare: toy" in result.output
    for label in ("good", "twin", "poor"):
        assert label in result.output
    assert "rank" in result.output and "report:" in result.output
    assert "38 of 40 label rows" in result.output
    assert next((tmp_path / "reports").glob("compare-*/report.html")).is_file()


def test_cli_refuses_with_one_line(tmp_path: Path):
    a = write_run(tmp_path / "a", make_rows(ERRORS["good"]))
    b = write_run(tmp_path / "b", make_rows(ERRORS["poor"]), model="poor", bench="other")
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--out-root", str(tmp_path)])
    assert result.exit_code == 1
    assert "error:" in result.output and "different benchmarks" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("compare-*"))


def test_nothing_scored_by_all_still_compares_and_reports(tmp_path: Path):
    """One model fails everywhere: an empty intersection, undefined numbers, no plots."""
    a = write_run(tmp_path / "a", make_rows(ERRORS["good"]))
    b = write_run(
        tmp_path / "b", make_rows(ERRORS["poor"], dict.fromkeys(range(N), "failed")), model="poor"
    )
    outcome = run_compare([str(a), str(b)], out_root=tmp_path / "r", n_boot=100)
    c = outcome.comparison
    assert c["intersection"]["n_scored_by_all"] == 0 and len(c["failures"]) == N
    (pair,) = c["pairs"]
    assert pair["mae_diff"] is None and pair["mae_diff_ci"] is None
    assert pair["wilcoxon"]["p"] is None and pair["significant"] is None
    assert [m["mae"] for m in c["models"]] == [None, None]
    page = (outcome.out / "report.html").read_text()
    assert "<svg" not in page
    markdown = (outcome.out / "report.md").read_text()
    assert f"the first {N}" not in markdown and f"{N} record(s) failed" in markdown
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "--out-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0 of 40 label rows" in result.output


def test_epsilon_column_only_where_there_is_one(three: list[Path], tmp_path: Path):
    outcome = run_compare([str(p) for p in three], out_root=tmp_path / "r", n_boot=100)
    assert "ε-error" not in (outcome.out / "report.md").read_text()
