"""The images a bench runs on: the user's chips repeated to a steady-state count.

A few dozen images finish before thread pools and caches warm up, so the bench repeats the
given images (hard links where the file system allows, copies otherwise) into a work folder
of ``count`` files, with a ``labels.csv`` that the ``csv`` benchmark reads, so ``agebench eval``
runs on exactly the files every other measurement reads. Ages come from UTKFace-style names
(``[age]_...``) when present, else 0: the bench measures speed, the MAE it prints is only a
check that the pipeline did not break.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from agebench.core.errors import AgebenchError
from agebench.runner.walk import iter_images


@dataclass(frozen=True)
class Workload:
    root: Path
    labels: Path
    images: list[Path]
    sources: int


def _age_of(name: str) -> float:
    head = name.split("_", 1)[0]
    return float(head) if head.isdigit() else 0.0


def build_workload(source: Path, work: Path, count: int) -> Workload:
    """``count`` images under ``work/images`` cycling through ``source``'s, plus labels."""
    originals = list(iter_images(source))
    if not originals:
        raise AgebenchError(f"{source}: no images to bench")
    images_dir = work / "images"
    if images_dir.exists():
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)
    images: list[Path] = []
    rows = []
    for index in range(count):
        original = originals[index % len(originals)]
        target = images_dir / f"{index:07d}{original.suffix.lower()}"
        try:
            os.link(original, target)
        except OSError:
            shutil.copyfile(original, target)
        images.append(target)
        rows.append((target.relative_to(work).as_posix(), _age_of(original.name)))
    labels = work / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "age"])
        writer.writerows(rows)
    return Workload(work, labels, images, len(originals))
