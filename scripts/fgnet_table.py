"""The results table of scripts/fgnet-experiments.sh, read from the runs it wrote.

Usage: python scripts/fgnet_table.py [REPORTS]  (default: reports)

Reads ``REPORTS/fgnet-exp/eval-*/summary.json`` (off-the-shelf and cross-validated MAE),
``REPORTS/train/fgx-*/`` (per fold ``result.json`` and ``metrics.jsonl``) and
``REPORTS/fgnet-exp/train-wall.tsv`` (the wall seconds of each train command), and prints one
Markdown row per trained run. Nothing is recomputed: every number is one the commands wrote.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

SHORT = {"dlib": "dlib-age-v1", "apmoe": "apmoe-mobilenetv2", "wrn": "yu4u-wrn-16-8"}


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _mae(reports: Path, model: str) -> float | None:
    summary = _json(reports / "fgnet-exp" / f"eval-{model}" / "summary.json")
    return None if summary is None else float(summary["metrics"]["age"]["mae"])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _isolated(reports: Path, run: Path, results: list[dict[str, Any]]) -> str:
    """yes when every image eval scored with a fold's model is in that fold's test part of
    ``split.json`` and in neither its training nor its validation part."""
    predictions = reports / "fgnet-exp" / f"eval-{run.name}" / "predictions.jsonl"
    if not predictions.is_file() or not results:
        return "-"
    splits = {r["model"]: _json(run / f"fold{r['fold']}" / "split.json") for r in results}
    for line in predictions.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["status"] != "ok":
            continue
        split = splits.get(record["model"]["name"])
        if split is None or record["image"] not in split["test"]:
            return "NO"
        if record["image"] in split["train"] or record["image"] in split["val"]:
            return "NO"
    return "yes"


def _row(reports: Path, run: Path, walls: dict[str, float]) -> list[str]:
    name = run.name
    config = _json(run / "config.json")
    backbone = config["training"]["backbone"]
    loss = config["training"]["loss"]
    frozen = bool(config["config"].get("freeze_backbone"))
    results = [_json(f / "result.json") for f in sorted(run.glob("fold*"))]
    results = [r for r in results if r is not None]
    speeds = [
        json.loads(line)["images_per_second"]
        for f in sorted(run.glob("fold*"))
        if (f / "metrics.jsonl").is_file()
        for line in (f / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    parity = [
        max(
            v
            for per_set in r["export"]["report"]["max_abs_diff"].values()
            for v in per_set.values()
        )
        for r in results
        if "export" in r
    ]
    parity_age = [
        max(r["export"]["report"]["max_abs_diff_age"].values()) for r in results if "export" in r
    ]
    gate_mae = [
        r["export"]["report"]["real_faces"]["mae"]
        for r in results
        if "export" in r and r["export"]["report"]["real_faces"].get("mae") is not None
    ]
    epochs = [f"{r['best_epoch']}/{r['epochs_run']}" for r in results]
    cfg = config["config"]
    return [
        name,
        backbone,
        loss,
        f"{'head' if frozen else 'full'}, lr {cfg['lr']:g}, {cfg['epochs']} ep",
        _fmt(_mae(reports, backbone), ".2f"),
        _fmt(_mae(reports, name), ".2f"),
        f"{len(results)}/5",
        " ".join(epochs),
        _fmt(config["crops"]["build_seconds"], ".0f"),
        _fmt(walls.get(name), ".0f"),
        _fmt(sum(r["train_seconds"] for r in results) if results else None, ".1f"),
        _fmt(statistics.median(speeds) if speeds else None, ",.0f"),
        _fmt(max(parity) if parity else None, ".1e"),
        _fmt(max(parity_age) if parity_age else None, ".1e"),
        f"{min(gate_mae):.1f}-{max(gate_mae):.1f}" if gate_mae else "-",
        _isolated(reports, run, results),
    ]


def main(reports: Path) -> None:
    walls: dict[str, float] = {}
    tsv = reports / "fgnet-exp" / "train-wall.tsv"
    if tsv.is_file():
        for line in tsv.read_text(encoding="utf-8").splitlines():
            name, seconds = line.split("\t")
            walls[name] = float(seconds)  # a rerun's line replaces the earlier one
    headers = [
        "run",
        "backbone",
        "loss",
        "trained, lr, max epochs",
        "off the shelf MAE",
        "trained 5-fold MAE",
        "folds",
        "best/run epochs per fold",
        "crop cache build s (once per backbone)",
        "train wall s",
        "epochs s (sum of folds)",
        "images/s per epoch (median)",
        "parity max abs(torch - ort)",
        "parity max age diff (years)",
        "gate MAE on UTKFace-48 (folds)",
        "test folds unseen",
    ]
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for run in sorted((reports / "train").glob("fgx-*")):
        if (run / "config.json").is_file():
            print("| " + " | ".join(_row(reports, run, walls)) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "reports"))
