"""Benchmarks as data: one frozen spec per benchmark, and the records its loader produces.

A loader reads a benchmark laid out exactly as its authors publish it and returns one
``Record`` per label row. Rows it cannot read, labels whose image is missing and images that
have no label become ``LabelProblem``s (file, line, reason) instead of exceptions, so one bad
row never stops an evaluation; only a missing root, label file or column is fatal.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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

    @classmethod
    def of(cls, config: Any) -> LoadOptions:
        """The options of a run's config that has these fields by name (eval's and train's
        configs): both read a benchmark with the same options, hence the same folds."""
        return cls(
            root=config.root,
            split=config.split,
            protocol=config.protocol,
            labels=config.labels,
            columns=dict(config.columns),
            folds=config.folds,
            seed=config.seed,
            options=dict(config.options),
        )


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

    @property
    def all_protocols(self) -> dict[str, str]:
        """Its own protocols (the first the default), then the generic ones it does not define:
        what ``--protocol`` accepts and ``benches list``/``info`` show."""
        generic = {k: v for k, v in GENERIC_PROTOCOLS.items() if k not in self.protocols}
        return {**self.protocols, **generic}

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
        if options.protocol is not None and options.protocol not in self.all_protocols:
            raise BenchmarkError(
                f"{self.name}: unknown protocol {options.protocol!r}; "
                f"protocols: {', '.join(self.all_protocols)}"
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
        generic = options.protocol is not None and options.protocol not in self.protocols
        # a generic protocol folds the records the loader gives under its default protocol
        data = self.loader(replace(options, protocol=None) if generic else options)
        if data.split is None:
            protocol = data.protocol or (None if generic else options.protocol)
            protocol = protocol or self.default_protocol
            data.split = options.split or self.default_split_for(protocol)
        if generic:
            assert options.protocol is not None
            data.records = deal_folds(
                data.records, options.protocol, options.folds, options.seed, bench=self.name
            )
            data.protocol = options.protocol
        data.protocol = data.protocol or options.protocol or self.default_protocol
        return data


# --- folds every benchmark offers ---------------------------------------------------------

#: protocols every benchmark accepts unless it defines its own of that name, so that a model
#: trained per fold (``agebench train``) is scored by ``eval --model NAME-fold{fold}`` on the
#: very folds it was trained without: both read the folds from here
GENERIC_PROTOCOLS: dict[str, str] = {
    "kfold": "generic k folds (--folds k, default 5, dealt by --seed): subject-disjoint where "
    "records have subjects, image by image otherwise",
    "lopo": "generic leave one subject out: fold = subject (needs subjects)",
}


def subject_kfold(subjects: Iterable[str], k: int, seed: int) -> dict[str, int]:
    """Subject-disjoint folds: subjects shuffled with a fixed seed, dealt round-robin.

    Deterministic for a given subject set, k and seed, whatever order the subjects came in.
    """
    unique = sorted(set(subjects))
    if k < 2 or k > len(unique):
        raise BenchmarkError(f"cannot make {k} subject-disjoint folds from {len(unique)} subjects")
    random.Random(seed).shuffle(unique)
    return {subject: index % k for index, subject in enumerate(unique)}


def deal_folds(
    records: Sequence[Record], protocol: str, folds: int, seed: int, *, bench: str
) -> list[Record]:
    """The records with ``fold`` set by a generic protocol (``GENERIC_PROTOCOLS``).

    ``kfold``: ``subject_kfold`` over the subjects, a record without a subject counting as a
    subject of its own (so records without subjects are dealt one by one, by the seed);
    ``lopo``: the subject is the fold, and every record must have one."""
    if protocol == "lopo":
        if any(r.subject is None for r in records):
            raise BenchmarkError(f"{bench}: --protocol lopo needs a subject for every record")
        return [replace(r, fold=r.subject) for r in records]
    if protocol != "kfold":
        raise BenchmarkError(f"{bench}: {protocol!r} is no generic protocol")
    # a subject keeps its own name (the dealing of a benchmark's own subject kfold, FG-NET's)
    keys = [r.subject if r.subject is not None else f"\0{r.image}" for r in records]
    if not keys:
        return []
    dealt = subject_kfold(keys, folds, seed)
    return [replace(r, fold=str(dealt[key])) for r, key in zip(records, keys, strict=True)]
