"""A model that has seen the test set: declared training data in manifests, the memorisation
signal of ``agebench.core.metrics``, the findings an eval and a comparison carry."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from agebench.cli import main
from agebench.comparison.runs import load_run
from agebench.comparison.statistics import compare_runs
from agebench.core.errors import ManifestError
from agebench.core.metrics import compute_metrics
from agebench.core.metrics.memorisation import memorisation_signal
from agebench.core.metrics.scalars import wilson_lower_bound
from agebench.findings import contamination_findings, declared_training
from agebench.models.manifest import load_manifest
from agebench.models.training_data import parse_training_data
from agebench.report.write import render_compare_markdown, render_markdown
from tests.fixtures.tiny_models import DLIB_MANIFEST, write_manifest
from tests.unit.test_compare import AGES, ERRORS, make_rows, write_run

# --- the statistic, by hand ------------------------------------------------------------------


def test_signal_counts_windows_and_ratio_by_hand():
    # |err|: 0, 0.3, 0.5 (zero window, 0.5 inclusive) | 0.7, 1.2, 1.5 (beside, 1.5 inclusive)
    # | 2, 3 (outside both)
    s = memorisation_signal(np.array([0.0, 0.3, -0.5, 0.7, -1.2, 1.5, 2.0, -3.0]))
    assert (s["n"], s["n_zero"], s["n_neighbour"]) == (8, 3, 3)
    assert s["share_zero"] == pytest.approx(3 / 8) and s["share_neighbour"] == pytest.approx(3 / 8)
    assert s["ratio"] == pytest.approx(2.0)  # (3 / 1 year) / (3 / 2 years)
    # Wilson, one-sided 95%: z = 1.64485, p = 3/6 -> p_low = 0.22126 -> 2 p / (1 - p) = 0.56825
    assert s["ratio_low"] == pytest.approx(0.56825, abs=1e-4)
    assert s["flagged"] is False


def test_wilson_bound_by_hand():
    z = 1.6448536269514722
    n, k = 6, 3
    p = k / n
    expected = (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (
        1 + z * z / n
    )
    assert wilson_lower_bound(k, n, 0.95) == pytest.approx(expected)
    assert wilson_lower_bound(0, 0, 0.95) is None


def test_whole_year_errors_of_a_smooth_density_give_one():
    # whole-year predictions on whole-year labels: 10 at 0, 10 at +1, 10 at -1 (flat)
    err = np.array([0.0] * 10 + [1.0] * 10 + [-1.0] * 10 + [4.0] * 20)
    s = memorisation_signal(err)
    assert s["ratio"] == pytest.approx(1.0)  # a 0.5..1.0 neighbourhood would say 0.5
    assert not s["flagged"]


def test_continuous_smooth_errors_stay_near_one_and_unflagged():
    rng = np.random.default_rng(0)
    err = rng.uniform(-10, 10, 50_000)
    s = memorisation_signal(err)
    assert 0.9 < s["ratio"] < 1.1 and not s["flagged"]
    # a Laplace error density with an MAE of 2 years (as good as real-age models get): 1.44
    s = memorisation_signal(rng.laplace(0, 2, 50_000))
    assert 1.3 < s["ratio"] < 1.6 and not s["flagged"]


def test_errors_piled_at_zero_are_flagged():
    err = np.array([0.0] * 50 + [1.0] * 5 + [-1.0] * 5 + [7.0] * 40)
    s = memorisation_signal(err)
    assert s["ratio"] == pytest.approx(10.0) and s["ratio_low"] > 2.0 and s["flagged"]


def test_too_few_errors_near_zero_never_flag():
    # every error at zero, but only 20 of them: the bound is high, the count is not enough
    s = memorisation_signal(np.zeros(20))
    assert s["ratio"] is None  # nothing beside zero: no finite ratio (JSON keeps no inf)
    assert s["ratio_low"] == pytest.approx(14.784, abs=1e-3)
    assert not s["flagged"]
    assert memorisation_signal(np.zeros(30))["flagged"]


def test_compute_metrics_carries_the_signal_per_target():
    rows = [
        {"status": "ok", "age": float(a), "pred_age": float(a), "targets": {"apparent_age": a + 5}}
        for a in range(40)
    ]
    m = compute_metrics(rows, n_boot=100)
    assert m["memorisation"]["n_zero"] == 40 and m["memorisation"]["flagged"]
    other = compute_metrics(rows, target="apparent_age", n_boot=100)
    assert other["memorisation"]["n_zero"] == 0 and not other["memorisation"]["flagged"]
    json.dumps(m, allow_nan=False)  # JSON-ready


# --- manifests ---------------------------------------------------------------------------------


def _manifest(tmp_path: Path, provenance_lines: str) -> Path:
    path = write_manifest(tmp_path)
    path.write_text(path.read_text() + provenance_lines)
    return path


def test_training_data_names_are_parsed(tmp_path: Path):
    spec = load_manifest(
        _manifest(
            tmp_path,
            'training_data = ["fgnet", "utkface", "afad"]\n'
            'training_data_notes = "the whole of each"\n'
            'suspected_training_data = [{ name = "morph", reason = "errors pile at zero" }]\n',
        )
    )
    assert spec.provenance["training_data"] == ["fgnet", "utkface", "afad"]  # afad: no loader
    assert spec.provenance["suspected_training_data"] == [
        {"name": "morph", "reason": "errors pile at zero"}
    ]
    assert spec.provenance["training_data_notes"] == "the whole of each"


def test_no_training_data_declares_an_empty_list(tmp_path: Path):
    assert load_manifest(write_manifest(tmp_path)).provenance["training_data"] == []


def test_free_text_training_data_is_kept_as_notes(tmp_path: Path):
    # manifests pulled before the key was structured hold free text: they still load
    spec = load_manifest(_manifest(tmp_path, 'training_data = "IMDB-WIKI, IMDB part"\n'))
    assert spec.provenance["training_data"] == []
    assert spec.provenance["training_data_notes"] == "IMDB-WIKI, IMDB part"


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ('training_data = ["fg-net"]\n', "called 'fgnet'"),
        ('training_data = ["imdb_wiki"]\n', "called 'imdb-wiki'"),
        ('training_data = ["utkfac"]\n', "called 'utkface'"),
        ('training_data = ["FGNET"]\n', "lower case"),
        ('training_data = ["fgnet", "fgnet"]\n', "twice"),
        ('training_data = "x"\ntraining_data_notes = "y"\n', "free text"),
        ("training_data = 3\n", "list of dataset names"),
        ('suspected_training_data = ["fgnet"]\n', "'name' and 'reason'"),
        ('suspected_training_data = [{ name = "fgnet", reason = " " }]\n', "non-empty 'reason'"),
        (
            'training_data = ["fgnet"]\n'
            'suspected_training_data = [{ name = "fgnet", reason = "r" }]\n',
            "both declared and suspected",
        ),
        ("training_data_notes = 1\n", "must be a string"),
    ],
)
def test_malformed_training_data_is_refused(tmp_path: Path, lines: str, message: str):
    with pytest.raises(ManifestError, match=message.replace("(", r"\(")) as caught:
        load_manifest(_manifest(tmp_path, lines))
    assert "[provenance]" in str(caught.value) and "\n" not in str(caught.value)


def test_shipped_and_pullable_manifests_declare_what_is_known():
    from agebench.build.convert.keras_graph import APMOE_MANIFEST
    from agebench.build.convert.wrn import MANIFEST as WRN_MANIFEST

    dlib = load_manifest(DLIB_MANIFEST).provenance
    assert dlib["training_data"] == []  # the authors name no public dataset
    assert [s["name"] for s in dlib["suspected_training_data"]] == ["fgnet"]
    assert "110k" in dlib["training_data_notes"]
    wrn = parse_training_data(WRN_MANIFEST["provenance"], "wrn")
    assert wrn["training_data"] == ["imdb-wiki"] and "IMDB part" in wrn["training_data_notes"]
    apmoe = parse_training_data(APMOE_MANIFEST["provenance"], "apmoe")
    assert apmoe["training_data"] == [] and "Facial Age" in apmoe["training_data_notes"]


# --- findings ----------------------------------------------------------------------------------


def _spec(name: str, **provenance: object) -> SimpleNamespace:
    return SimpleNamespace(name=name, provenance=parse_training_data(provenance, name))


def _summary(bench: str, errors: list[float], model: str = "m") -> dict:
    rows = [{"status": "ok", "age": 30.0, "pred_age": 30.0 + e} for e in errors]
    return {
        "benchmark": {"name": bench},
        "model": {"name": model},
        "metrics": {"age": compute_metrics(rows, n_boot=100)},
    }


SMOOTH = [float((i % 21) - 10) for i in range(210)]  # flat on -10..10 whole years


def test_a_declared_benchmark_is_a_finding():
    spec = _spec("m", training_data=["fgnet", "imdb-wiki"])
    findings = contamination_findings(_summary("fgnet", SMOOTH), [spec])
    assert [f["kind"] for f in findings] == ["trained-on-benchmark"]
    assert "declares fgnet" in findings[0]["message"]
    assert contamination_findings(_summary("utkface", SMOOTH), [spec]) == []


def test_a_suspicion_is_a_finding_with_its_reason():
    spec = _spec("m", suspected_training_data=[{"name": "fgnet", "reason": "MAE 3 here, 7 there"}])
    findings = contamination_findings(_summary("fgnet", SMOOTH), [spec])
    assert [f["kind"] for f in findings] == ["suspected-trained-on-benchmark"]
    assert findings[0]["message"].endswith("MAE 3 here, 7 there")


def test_the_signal_is_a_finding_whatever_the_manifest_says():
    piled = [0.0] * 60 + SMOOTH
    findings = contamination_findings(_summary("csv", piled), [_spec("m")])
    assert [f["kind"] for f in findings] == ["memorisation"]
    assert "within 0.5 years" in findings[0]["message"] and "[" not in findings[0]["message"]
    assert contamination_findings(_summary("csv", SMOOTH), [_spec("m")]) == []


def test_a_per_fold_family_is_matched_model_by_model():
    family = [_spec("m-0"), _spec("m-1", training_data=["morph"])]
    findings = contamination_findings(_summary("morph", SMOOTH, model="m-fold"), family)
    assert [f["kind"] for f in findings] == ["trained-on-benchmark"]
    assert "m-fold (m-1)" in findings[0]["message"]
    assert declared_training(family) == {"training_data": ["morph"], "suspected_training_data": []}


def test_the_report_shows_the_signal_and_the_findings_first():
    summary = _summary("fgnet", [0.0] * 60 + SMOOTH)
    summary["findings"] = contamination_findings(summary, [_spec("m", training_data=["fgnet"])])
    md = render_markdown(summary)
    assert md.index("Read this first") < md.index("Headline")
    assert "trained-on-benchmark" in md and "memorisation" in md
    assert "Error density at zero (memorisation signal)" in md
    # 60 + 10 of 270 at zero, 10 at +1 and 10 at -1: 2 * 70 / 20
    assert "| 70 (25.9%) | 20 (7.4%) | 7.00 |" in md


# --- compare -------------------------------------------------------------------------------------


def _contaminated_pair(tmp_path: Path) -> list[Path]:
    memorised = [0.0 if i % 4 else 3.0 for i in range(len(AGES))]  # 30 of 40 at zero
    good = write_run(tmp_path / "good", make_rows(ERRORS["good"]))
    seen = write_run(tmp_path / "seen", make_rows(memorised), model="seen")
    summary = json.loads((seen / "summary.json").read_text())
    summary["findings"] = [{"kind": "trained-on-benchmark", "message": "seen declares toy"}]
    (seen / "summary.json").write_text(json.dumps(summary))
    return [good, seen]


def test_compare_carries_findings_and_marks_the_ranking(tmp_path: Path):
    c = compare_runs([load_run(p) for p in _contaminated_pair(tmp_path)], n_boot=200, catalog=None)
    order = {e["model"]: e for e in c["ranking"]["order"]}
    assert order["seen"]["rank"] == 1  # the best MAE: exactly why it must be marked
    assert order["seen"]["contamination"] == ["declared", "memorised"]
    assert order["good"]["contamination"] == []
    models = {m["label"]: m for m in c["models"]}
    assert [f["kind"] for f in models["seen"]["findings"]] == [
        "trained-on-benchmark",
        "memorisation",
    ]
    assert {f["model"] for f in c["findings"]} == {"seen"}
    md = render_compare_markdown(c)
    assert md.index("Read this first") < md.index("Ranking")
    assert "has seen the test set" in md and "declared, memorised" in md


def test_compare_terminal_names_the_contaminated_model(tmp_path: Path):
    runs = _contaminated_pair(tmp_path)
    result = CliRunner().invoke(
        main,
        ["compare", *map(str, runs), "--out-root", str(tmp_path / "out"), "--bootstrap", "200"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "seen test set" in result.output and "declared, memorised" in result.output
    assert "seen: trained-on-benchmark: seen declares toy" in result.output
    written = json.loads(next((tmp_path / "out").rglob("comparison.json")).read_text())
    assert written["findings"][0]["model"] == "seen"
