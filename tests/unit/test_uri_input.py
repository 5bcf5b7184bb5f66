"""URI inputs (``s3://``, ``file://``...): listing rules and order, bounded reads, routing.

s3 itself cannot be reached from CI: its path is tested up to the network (the URI is routed to
pyarrow's S3 filesystem; a local tree standing in for the bucket is listed and read through
that same code, giving ``s3://`` records).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner

from agebench.api import default_predict_out
from agebench.cli import main
from agebench.core.errors import AgebenchError
from agebench.core.fileread import ImageDecodeError
from agebench.runner import uri
from agebench.runner.walk import iter_images


def _tree(root: Path) -> Path:
    """Images, hidden names, a non-image and nested folders, written out of order."""
    for name in (
        "z.webp",
        "a.jpg",
        "B.PNG",
        "notes.txt",
        ".hidden.jpg",
        ".git/x.jpg",
        "sub/deeper/d.jpeg",
        "sub/c.jpg",
        "sub.jpg",
        "a b/e.bmp",
    ):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())
    return root


@pytest.mark.parametrize("recursive", [True, False])
def test_file_uri_lists_what_the_folder_walk_yields(tmp_path: Path, recursive: bool):
    root = _tree(tmp_path / "photos")
    walked = [p.relative_to(root).as_posix() for p in iter_images(root, recursive=recursive)]
    listed = list(uri.iter_objects(root.as_uri() + "/", recursive=recursive))
    assert [o.relative.as_posix() for o in listed] == walked
    assert ".hidden.jpg" not in walked and "notes.txt" not in walked and "a.jpg" in walked
    assert ("sub/deeper/d.jpeg" in walked) is recursive
    by_name = {o.relative.as_posix(): o for o in listed}
    assert by_name["a.jpg"].uri == f"{root.as_uri()}/a.jpg"
    assert by_name["a.jpg"].size == len(b"a.jpg")
    assert uri.count_objects(root.as_uri(), recursive=recursive) == len(walked)


def test_one_object_named_is_listed_alone(tmp_path: Path):
    root = _tree(tmp_path / "photos")
    (only,) = uri.iter_objects((root / "sub" / "c.jpg").as_uri())
    assert only.relative == PurePosixPath("c.jpg")
    assert only.uri == (root / "sub" / "c.jpg").as_uri()


def test_missing_and_too_large_objects_fail_alone(tmp_path: Path):
    root = _tree(tmp_path / "photos")
    objects = {o.relative.as_posix(): o for o in uri.iter_objects(root.as_uri())}
    assert uri.read_object(objects["a.jpg"]) == b"a.jpg"
    (root / "z.webp").unlink()  # gone between listing and reading
    with pytest.raises(ImageDecodeError) as missing:
        uri.read_object(objects["z.webp"])
    assert missing.value.reason == "file not found"
    with pytest.raises(ImageDecodeError) as large:
        uri.read_object(objects["B.PNG"], max_bytes=3)
    assert large.value.reason.startswith("file too large: 5 bytes exceeds the limit of 3 bytes")
    (root / "a.jpg").write_bytes(b"x" * 100)  # grew after the listing saw 5 bytes
    with pytest.raises(ImageDecodeError, match="it grew while read"):
        uri.read_object(objects["a.jpg"], max_bytes=10)


def test_unknown_scheme_and_missing_prefix_are_one_line_errors(tmp_path: Path):
    with pytest.raises(AgebenchError, match="not a filesystem URI agebench can read"):
        uri.check_input("foo://bucket/x")
    with pytest.raises(AgebenchError, match="input not found"):
        uri.check_input((tmp_path / "nope").as_uri())


def test_cli_unknown_scheme_exits_1_without_traceback(tmp_path: Path):
    result = CliRunner().invoke(main, ["predict", "foo://bucket/x", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    text = result.output.strip()
    assert text.startswith("error: foo://bucket/x: not a filesystem URI"), text
    assert "Traceback" not in text and len(text.splitlines()) == 1


def test_is_uri():
    assert uri.is_uri("s3://bucket/prefix/") and uri.is_uri("file:///tmp/x")
    assert not uri.is_uri("photos/a.jpg") and not uri.is_uri("C:\\photos")
    assert not uri.is_uri(Path("s3:/bucket"))


def test_default_out_is_named_after_the_uri():
    assert default_predict_out("s3://bucket/archive/2019/") == Path("reports/predict-2019")
    assert default_predict_out("s3://bucket") == Path("reports/predict-bucket")
    assert default_predict_out("gs://bucket/a/photo.JPG") == Path("reports/predict-photo")


def test_s3_is_routed_to_pyarrows_s3_filesystem():
    filesystem, path = uri.resolve("s3://bucket/photos?region=us-east-1")
    assert isinstance(filesystem, pafs.S3FileSystem) and path == "bucket/photos"


def test_s3_objects_listed_and_read_through_the_same_code(tmp_path, monkeypatch):
    """A local tree stands in for the bucket behind ``s3://bucket/photos/``."""
    root = _tree(tmp_path / "bucket" / "photos")
    bucket = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    seen: list[str] = []

    def resolve(given: str):
        seen.append(given)
        assert given.startswith("s3://bucket/photos")
        return bucket, "bucket/photos"

    monkeypatch.setattr(uri, "resolve", resolve)
    uri._filesystem.cache_clear()
    try:
        objects = list(uri.iter_objects("s3://bucket/photos/?region=us-east-1"))
        walked = [p.relative_to(root).as_posix() for p in iter_images(root)]
        assert [o.relative.as_posix() for o in objects] == walked
        first = objects[0]
        assert first.uri == f"s3://bucket/photos/{walked[0]}?region=us-east-1"
        assert first.path == f"bucket/photos/{walked[0]}"
        assert uri.read_object(first) == walked[0].encode()
    finally:
        uri._filesystem.cache_clear()
    assert seen and all(s == "s3://bucket/photos/?region=us-east-1" for s in seen)
