"""Reports rendered from a synthetic eval: the numbers shown are the summary's, the HTML page
loads nothing from anywhere, all text is escaped, and the writer leaves no temporary files."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib
import pytest

from agebench.core.metrics import compute_metrics
from agebench.core.metrics.groups import compute_group_metrics
from agebench.report import write as write_module
from agebench.report.write import render_html, render_markdown, write_report

ADIENCE = [(0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100)]


def make_rows(n: int = 48) -> list[dict[str, Any]]:
    """Deterministic rows: errors cycle through -6..+7 years, every 11th image has no face and
    the last label's image is missing."""
    rows = []
    for i in range(n):
        age = float(2 * i + 1)
        status = "missing" if i == n - 1 else ("no_face" if i % 11 == 5 else "ok")
        rows.append(
            {
                "image": f"faces/{i:03d}.jpg",
                "status": status,
                "error": None if status == "ok" else status,
                "age": age,
                "targets": {"apparent_age": age + 0.4},
                "age_std": 3.0,
                "age_group": None,
                "fold": str(i % 3),
                "subject": f"s{i % 7}",
                "split": "test",
                "attributes": {"gender": "FM"[i % 2]},
                "pred_age": age + (i % 14) - 6 if status == "ok" else None,
                "pred_std": None,
                "pred_group": None,
            }
        )
    return rows


def make_summary(
    rows: list[dict[str, Any]], targets: tuple[str, ...] = ("age",), **extra: Any
) -> dict[str, Any]:
    counts = {s: sum(r["status"] == s for r in rows) for s in ("no_face", "failed", "missing")}
    summary = {
        "schema": "agebench.eval-summary/1",
        "benchmark": {
            "name": "toy",
            "title": "Toy benchmark",
            "version": "1.0",
            "protocol": "all",
            "split": "test",
            "root": "/data/toy",
            "files_sha256": "ab" * 32,
            "n_label_files": 1,
            "n_images": len(rows),
        },
        "model": {"name": "tiny-age", "sha256": "cd" * 32, "framework": "onnx"},
        "faces": {"mode": "none", "ready_crop": "tight", "reconciliation": "used as is"},
        "execution": {"device": "cpu", "onnx_provider": "CPUExecutionProvider"},
        "counts": {"records": len(rows), "scored": len(rows) - sum(counts.values())}
        | counts
        | {"label_problems": 1},
        "metrics": {t: compute_metrics(rows, target=t, n_boot=200) for t in targets},
        "group_metrics": None,
        "problems": ["labels.csv:7: age 'x' is not a number"],
        "provenance": {
            "agebench_version": "0.1.0",
            "git_commit": "0123abcd",
            "created": "2025-01-01T00:00:00+00:00",
            "versions": {"numpy": "2.0", "onnxruntime": "1.18"},
        },
        "timing": {"seconds": 2.5, "images_per_second": 19.2},
    }
    return summary | extra


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return make_rows()


@pytest.fixture(scope="module")
def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return make_summary(rows)


@pytest.fixture(scope="module")
def plotting_state() -> dict[str, Any]:
    """pyplot's backend and open figures, before and after the rendering of ``page``."""
    import matplotlib.pyplot as plt

    return {"before": (matplotlib.get_backend(), plt.get_fignums())}


@pytest.fixture(scope="module")
def page(summary: dict[str, Any], rows: list[dict[str, Any]], plotting_state) -> str:
    import matplotlib.pyplot as plt

    rendered = render_html(summary, rows)
    plotting_state["after"] = (matplotlib.get_backend(), plt.get_fignums())
    return rendered


class _Resources(HTMLParser):
    """Every tag name, and every attribute that can make a browser fetch something."""

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


def test_html_is_self_contained(page: str):
    parsed = _Resources()
    parsed.feed(page)
    assert parsed.tags.count("svg") == 4
    assert page.count("<svg") == 4
    for banned in ("script", "link", "iframe", "object", "embed", "img"):
        assert banned not in parsed.tags, banned
    for tag, name, value in parsed.references:
        # in-page references (glyphs, clip paths) or embedded data, except plain links
        assert tag == "a" or value.startswith(("#", "data:")), (tag, name, value[:60])
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page
    assert all(u.startswith("#") for u in re.findall(r"url\(\s*['\"]?([^)'\"]*)", page))
    assert "default-src 'none'" in page  # the browser refuses any fetch as well


def test_html_has_the_tables(page: str, summary: dict[str, Any]):
    m = summary["metrics"]["age"]
    for heading in (
        "Headline",
        "Cumulative score",
        "By age band",
        "By gender",
        "By fold",
        "Under-age check",
        "Provenance",
        "Problems",
    ):
        assert f">{heading}<" in page, heading
    assert page.count("<table>") >= 9
    assert f"<td>{m['mae']:.2f} [{m['mae_ci'][0]:.2f}, {m['mae_ci'][1]:.2f}]</td>" in page
    assert "<td>80+</td>" in page
    assert "labels.csv:7: age &#x27;x&#x27; is not a number" in page
    assert page.count("<figcaption>") == 4


def test_plots_leave_no_figures_and_keep_the_backend(page: str, plotting_state):
    assert plotting_state["after"] == plotting_state["before"]


def test_html_ids_are_unique(page: str):
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_all_text_is_escaped(rows):
    hostile = make_summary(
        rows,
        benchmark={"name": "x", "title": "<script>alert(1)</script>"},
        problems=["<img src=http://example.org/x.png> & more", "see [here](javascript:x)"],
    )
    page = render_html(hostile, [])  # no rows: no plots, only the text matters here
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=http://example.org/x.png&gt; &amp; more" in page  # plain text only
    markdown = render_markdown(hostile)
    assert not re.search(r"(?<!\\)<", markdown)  # every < escaped: no inline HTML
    assert "\\<script\\>" in markdown
    assert "](javascript" not in markdown


def test_markdown_has_the_headline_numbers(summary: dict[str, Any]):
    markdown = render_markdown(summary)
    m = summary["metrics"]["age"]
    lo, hi = m["mae_ci"]
    headline = (
        f"| age | {m['n_rows']} | {m['n_scored']} | {100 * m['coverage']:.1f}% "
        f"| {m['mae']:.2f} [{lo:.2f}, {hi:.2f}] | {m['rmse']:.2f} | {m['bias']:.2f} "
        f"| {m['median_ae']:.2f} | {100 * m['cs5']:.1f}% | {100 * m['ce20']:.1f}% | n/a |"
    )
    assert headline in markdown
    assert "MAE [95% CI]" in markdown
    cs_row = "| CS@L | " + " | ".join(f"{100 * m['cs'][str(k)]:.1f}%" for k in range(11)) + " |"
    assert cs_row in markdown
    for band in m["by_band"]:
        assert f"| {band['band']} | {band['n']} |" in markdown
    u = m["under_age"]
    assert f"| 18.0 | {u['n_minors']} | {u['n_adults']} |" in markdown
    assert f"Fold MAE mean {m['fold_mae_mean']:.2f} ± {m['fold_mae_std']:.2f}" in markdown
    assert "| git_commit | 0123abcd |" in markdown
    assert "- labels.csv:7: age 'x' is not a number" in markdown


def test_markdown_epsilon_and_two_targets(rows):
    summary = make_summary(rows, ("age", "apparent_age"))
    markdown = render_markdown(summary)
    eps = summary["metrics"]["apparent_age"]["epsilon_error"]
    assert eps is not None and f"| {eps:.4f} |" in markdown
    assert "## Target: age" in markdown and "## Target: apparent\\_age" not in markdown
    assert "## Target: apparent_age" in markdown
    assert render_html(summary, rows).count("<svg") == 8  # four plots per target


def test_markdown_tables_survive_pipes_in_values(rows):
    odd = [r | {"attributes": {"gender": "a|b"}} for r in rows]
    markdown = render_markdown(make_summary(odd))
    table = markdown.split("### By gender", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    cells = [len(re.findall(r"(?<!\\)\|", line)) for line in table]
    assert len(set(cells)) == 1 and cells[0] == 5
    assert "a\\|b" in table[2]


def test_group_metrics_section(rows):
    group_rows = [
        {"status": "ok", "age": None, "age_group": [25, 32], "pred_age": 28.0, "fold": "0"},
        {"status": "ok", "age": None, "age_group": [8, 12], "pred_age": 14.0, "fold": "1"},
        {"status": "no_face", "age": None, "age_group": [4, 6], "pred_age": None, "fold": "1"},
    ]
    groups = compute_group_metrics(group_rows, ADIENCE, n_boot=50)
    summary = make_summary(rows, group_metrics=groups)
    markdown = render_markdown(summary)
    assert "## Age groups" in markdown
    # accuracy 1/2 and one-off 2/2 over 2 scored of 3 label rows
    assert "| 3 | 2 | 66.7% | 50.0% [" in markdown
    assert "| 100.0% |" in markdown
    assert "| 25-32 | 0 | 0 | 0 | 0 | 1 | 0 | 0 | 0 |" in markdown
    assert "<h2>Age groups</h2>" in render_html(summary, [])


def test_nothing_scored_renders_without_plots():
    rows = [r | {"status": "failed", "pred_age": None} for r in make_rows(6)]
    summary = make_summary(rows)
    page = render_html(summary, rows)
    assert "<svg" not in page and "nothing to plot" in page
    assert "| age | 6 | 0 | 0.0% | n/a | n/a |" in render_markdown(summary)
    assert "| age | 0 | 0 | n/a |" in render_markdown(make_summary([]))


def test_write_report_is_atomic(tmp_path: Path, summary: dict[str, Any], rows, page: str):
    out = tmp_path / "eval" / "toy"
    out.mkdir(parents=True)
    (out / "report.md").write_text("an older report")
    md_path, html_path = write_report(out, summary, rows)
    assert sorted(os.listdir(out)) == ["report.html", "report.md"]  # no temporary left
    assert md_path.read_text(encoding="utf-8") == render_markdown(summary)
    assert html_path.read_text(encoding="utf-8") == page  # also: rendering is deterministic


def test_write_report_writes_nothing_when_rendering_fails(
    tmp_path: Path, summary: dict[str, Any], rows, monkeypatch: pytest.MonkeyPatch
):
    def broken(*args: Any) -> str:
        raise RuntimeError("plot failed")

    monkeypatch.setattr(write_module, "render_html", broken)
    with pytest.raises(RuntimeError):
        write_module.write_report(tmp_path, summary, rows)
    assert os.listdir(tmp_path) == []


def test_nested_values_are_key_value_rows_and_wide_tables_scroll():
    from agebench.report.document import Document, Section, key_value_table
    from agebench.report.html import render_html

    table = key_value_table({"device": "auto", "engine": {"backend": "onnxruntime", "lanes": 2}})
    assert table.rows == [
        ["device", "auto"],
        ["engine.backend", "onnxruntime"],
        ["engine.lanes", "2"],
    ]
    page = render_html(Document("h", "t", [Section("s", ["p"], [table])]))
    assert '<div class="scroll"><table>' in page and "{" not in page.split("<body>")[1]
