"""iter_images/count_images: deterministic order, the skip rules, and streaming behaviour."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agebench.runner import walk
from agebench.runner.walk import count_images, iter_images


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _relative(root: Path, recursive: bool = True) -> list[str]:
    return [p.relative_to(root).as_posix() for p in iter_images(root, recursive=recursive)]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    _touch(
        root,
        "b.jpg",
        "a.png",
        "C.JPG",
        "d.Jpeg",
        "e.WebP",
        "f.bmp",
        "notes.txt",
        "anim.gif",
        "noext",
        "sub/z.jpg",
        "sub/deeper/y.png",
        "sub/a.jpeg",
        "a_dir/x.jpg",
        "folder.jpg/inside.png",
        ".hidden.jpg",
        ".cache/secret.jpg",
        "sub/._shadow.jpg",
    )
    return root


EXPECTED_RECURSIVE = [
    "C.JPG",
    "a.png",
    "a_dir/x.jpg",
    "b.jpg",
    "d.Jpeg",
    "e.WebP",
    "f.bmp",
    "folder.jpg/inside.png",
    "sub/a.jpeg",
    "sub/deeper/y.png",
    "sub/z.jpg",
]


def test_recursive_order_and_filters(tree: Path) -> None:
    assert _relative(tree) == EXPECTED_RECURSIVE


def test_order_equals_sorting_by_path_components(tree: Path) -> None:
    found = list(iter_images(tree))
    assert found == sorted(found, key=lambda p: p.relative_to(tree).parts)


def test_non_recursive_lists_top_level_files_only(tree: Path) -> None:
    assert _relative(tree, recursive=False) == [
        "C.JPG",
        "a.png",
        "b.jpg",
        "d.Jpeg",
        "e.WebP",
        "f.bmp",
    ]


@pytest.mark.parametrize("recursive", [True, False])
def test_count_matches_iteration(tree: Path, recursive: bool) -> None:
    assert count_images(tree, recursive) == len(list(iter_images(tree, recursive=recursive)))


def test_yields_paths_in_the_callers_form(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    first = next(iter_images(Path("photos")))
    assert first == Path("photos/C.JPG")
    assert not first.is_absolute()


def test_hidden_root_itself_is_walked(tmp_path: Path) -> None:
    root = tmp_path / ".cache"
    _touch(root, "a.jpg")
    assert _relative(root) == ["a.jpg"]


def test_symlinks_files_followed_directories_not(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    _touch(root, "sub/real.jpg")
    _touch(outside, "other.jpg", "elsewhere/far.jpg")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # would recurse forever
    (root / "linked_dir").symlink_to(outside / "elsewhere", target_is_directory=True)
    (root / "linked.jpg").symlink_to(outside / "other.jpg")
    (root / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    # the dangling link has an image name: it is yielded, and decoding fails it with a reason
    assert _relative(root) == ["dangling.jpg", "linked.jpg", "sub/real.jpg"]


def test_symlinked_root_directory_is_followed(tmp_path: Path) -> None:
    _touch(tmp_path / "real", "a.jpg")
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert [p.name for p in iter_images(tmp_path / "alias")] == ["a.jpg"]


def test_single_file_root(tmp_path: Path) -> None:
    _touch(tmp_path, "one.JPG", "list.txt")
    assert list(iter_images(tmp_path / "one.JPG")) == [tmp_path / "one.JPG"]
    assert count_images(tmp_path / "one.JPG") == 1
    # Named explicitly, so passed on for decode_image to judge rather than silently dropped.
    assert list(iter_images(tmp_path / "list.txt", recursive=False)) == [tmp_path / "list.txt"]


def test_missing_root_raises_at_call_time(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"image folder or file not found: .*nope"):
        iter_images(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        count_images(missing)


def test_empty_directory(tmp_path: Path) -> None:
    assert list(iter_images(tmp_path)) == []
    assert count_images(tmp_path) == 0


def _scandir_failing_for(
    monkeypatch: pytest.MonkeyPatch, bad: Path, calls: list[str] | None = None
) -> None:
    real_scandir = os.scandir

    def fake_scandir(path: str) -> Iterator[os.DirEntry[str]]:
        if calls is not None:
            calls.append(path)
        if Path(path) == bad:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(walk.os, "scandir", fake_scandir)


def test_unreadable_subfolder_is_skipped_with_warning(
    tree: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Simulated, because root ignores permission bits; the real case is tested below."""
    _scandir_failing_for(monkeypatch, tree / "sub")
    with caplog.at_level(logging.WARNING, logger="agebench.runner.walk"):
        found = _relative(tree)
    assert found == [p for p in EXPECTED_RECURSIVE if not p.startswith("sub/")]
    assert "skipping unreadable folder" in caplog.text
    assert str(tree / "sub") in caplog.text


def test_unreadable_subfolder_for_real(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _touch(tmp_path, "a.jpg", "locked/b.jpg")
    locked = tmp_path / "locked"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with CAP_DAC_OVERRIDE (root): a mode-000 folder is readable")
        with caplog.at_level(logging.WARNING, logger="agebench.runner.walk"):
            assert _relative(tmp_path) == ["a.jpg"]
        assert "skipping unreadable folder" in caplog.text
    finally:
        locked.chmod(0o755)


def test_unreadable_root_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _scandir_failing_for(monkeypatch, tmp_path)
    with pytest.raises(PermissionError):
        list(iter_images(tmp_path))


def test_streams_one_directory_at_a_time(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    _scandir_failing_for(monkeypatch, tree / "not-there", calls)
    images = iter_images(tree)
    assert calls == []  # nothing is read until asked
    assert next(images) == tree / "C.JPG"
    assert calls == [str(tree)]  # the first image needs only the root listing
    rest = list(images)
    assert len(rest) == len(EXPECTED_RECURSIVE) - 1
    # Each real folder is listed exactly once, in output order; .cache is never opened.
    assert [Path(c).relative_to(tree).as_posix() for c in calls] == [
        ".",
        "a_dir",
        "folder.jpg",
        "sub",
        "sub/deeper",
    ]


def test_deep_tree_does_not_hit_recursion_limit(tmp_path: Path) -> None:
    deep = tmp_path
    for _ in range(300):
        deep = deep / "d"
    _touch(deep, "bottom.jpg")
    found = list(iter_images(tmp_path))
    assert len(found) == 1 and found[0].name == "bottom.jpg"
