"""Benchmarks as data: one frozen spec per benchmark, and the records its loader produces.

A loader reads a benchmark laid out exactly as its authors publish it and returns one
``Record`` per label row. Rows it cannot read, labels whose image is missing and images that
have no label become ``LabelProblem``s (file, line, reason) instead of exceptions, so one bad
row never stops an evaluation; only a missing root, label file or column is fatal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agebench.core.errors import AgebenchError
from agebench.core.types import FacesMode


class BenchmarkError(AgebenchError):
    """The benchmark cannot be read at all: missing root, label file or column."""


@dataclass(frozen=True, slots=True)
class Record:
    """One labelled image of a benchmark.

    ``image`` is the path relative to the root (POSIX), the record's identity in every output.
    ``age`` is the real (chronological) age in years; None where a benchmark has only groups.
    ``targets`` holds further targets such as ``apparent_age`` (APPA-REAL's mean, never
    rounded); ``age_std`` the apparent-age std used by the epsilon-error. ``age_group`` is an
    inclusive (low, high) range (Adience). ``box`` is a given face box (x1, y1, x2, y2) in image
    pixels. ``source`` says where the label came from (``file:line``).
    """

    image: str
    age: float | None
    source: str
    targets: Mapping[str, float] = field(default_factory=dict)
    age_std: float | None = None
    age_group: tuple[float, float] | None = None
    subject: str | None = None
    fold: str | None = None
    split: str | None = None
    box: tuple[float, float, float, float] | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LabelProblem:
    """A row or file the loader could not use; ``line`` is 1-based, header included."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.reason}"


@dataclass
class BenchmarkData:
    """What a loader returns: records in a deterministic order, problems, and the label files
    it read (hashed, with the images, into the run's provenance)."""

    records: list[Record]
    problems: list[LabelProblem] = field(default_factory=list)
    label_files: list[Path] = field(default_factory=list)
    #: the protocol and split the records follow. A loader sets ``protocol`` only when the
    #: data decided it (no --protocol given and only one protocol fits, FaceBase's FG-NET);
    #: :meth:`BenchmarkSpec.load` fills in the rest, so the caller never guesses either
    protocol: str | None = None
    split: str | None = None


@dataclass(frozen=True)
class LoadOptions:
    """Everything a loader may be asked. ``options`` holds benchmark-specific settings
    (``--option key=value`` on the command line), e.g. imdb-wiki's filters."""

    root: Path
    split: str | None = None
    protocol: str | None = None
    labels: Path | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    folds: int = 5
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadyCrop:
    """What an image is when used as is (``--faces none``).

    ``photo``: an in-the-wild photo, faces must be found (or given boxes used).
    ``tight``: the image is the face, tightly cropped (UTKFace chips: aligned, little margin).
    ``margin``: the face box grown by ``margin`` of its size on each side (APPA-REAL
    ``_face.jpg``: 40%, rotated upright). The runner uses this to restore the margin a model
    was trained with instead of feeding it a differently framed face.
    """

    kind: Literal["photo", "tight", "margin"]
    margin: float = 0.0
    aligned: bool = False
    description: str = ""


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    version: str
    title: str
    citation: str
    url: str
    #: how the data must lie under --root, shown by ``benches info`` (plain text, may be long)
    layout: str
    #: label files and their columns, shown by ``benches info``
    labels: str
    #: protocol name -> description; the first is the default
    protocols: Mapping[str, str]
    #: split names a user may pick (empty: the benchmark has none); the first is the default
    splits: tuple[str, ...]
    #: targets the records carry; the first is the headline
    targets: tuple[str, ...]
    crops: ReadyCrop
    default_faces: FacesMode
    loader: Callable[[LoadOptions], BenchmarkData]
    #: age-group benchmarks (Adience) are scored by group accuracy too
    groups: tuple[tuple[float, float], ...] = ()
    #: ``--option`` keys the loader understands, with their meaning and default
    options: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""
    #: when options change what the images are (``crop=original``, the csv's ``crop=``)
    crops_for_options: Callable[[Mapping[str, Any]], ReadyCrop] | None = None
    #: protocols that score every entry whatever its split (FaceBase's ``all``): they have
    #: no split, so none is defaulted and one given is refused
    unsplit_protocols: tuple[str, ...] = ()

    def ready_crop(self, options: Mapping[str, Any]) -> ReadyCrop:
        return self.crops_for_options(options) if self.crops_for_options else self.crops

    def faces_for(self, options: Mapping[str, Any]) -> FacesMode:
        """The default --faces: whole photos need detection even if the spec's default
        images are crops."""
        if self.default_faces == "none" and self.ready_crop(options).kind == "photo":
            return "detect"
        return self.default_faces

    @property
    def default_protocol(self) -> str:
        return next(iter(self.protocols))

    @property
    def default_split(self) -> str | None:
        """The split used when none is given, under the default protocol."""
        return self.default_split_for(self.default_protocol)

    def default_split_for(self, protocol: str) -> str | None:
        """The split used when none is given: the first, unless ``protocol`` has none."""
        if protocol in self.unsplit_protocols or not self.splits:
            return None
        return self.splits[0]

    def load(self, options: LoadOptions) -> BenchmarkData:
        """Validate the generic options, then run the loader."""
        if not options.root.exists():
            raise BenchmarkError(f"{options.root}: benchmark root not found")
        if not options.root.is_dir():
            raise BenchmarkError(f"{options.root}: benchmark root is not a folder")
        if options.split is not None and options.split not in self.splits:
            allowed = ", ".join(self.splits) if self.splits else "none (omit --split)"
            raise BenchmarkError(f"{self.name}: unknown split {options.split!r}; splits: {allowed}")
        if options.protocol is not None and options.protocol not in self.protocols:
            raise BenchmarkError(
                f"{self.name}: unknown protocol {options.protocol!r}; "
                f"protocols: {', '.join(self.protocols)}"
            )
        if options.split is not None and options.protocol in self.unsplit_protocols:
            raise BenchmarkError(
                f"{self.name}: --protocol {options.protocol} scores every entry; omit --split"
            )
        unknown = set(options.options) - set(self.options)
        if unknown:
            known = ", ".join(self.options) or "none"
            raise BenchmarkError(
                f"{self.name}: unknown --option {', '.join(sorted(unknown))}; known: {known}"
            )
        data = self.loader(options)
        data.protocol = data.protocol or options.protocol or self.default_protocol
        if data.split is None:
            data.split = options.split or self.default_split_for(data.protocol)
        return data
