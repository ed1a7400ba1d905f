"""Test images, built offline and imported into a container engine through its Docker API.

No image registry is reachable from the test machines, so every image is a root filesystem put
together from files of this host, sent as a tar to ``POST /images/create?fromSrc=-`` (the API of
``docker import``), which dockerd and Podman's compat service both serve. The image's default
command and environment are set with ``changes=CMD …`` / ``changes=ENV …`` (both engines honour
them; Podman ignores the separate ``tag=`` parameter, so the tag goes into ``repo=``).

The images (a driver may always override ``Cmd``/``Env``):

- ``localhost/warren-httpd:v1`` and ``:v2`` — static busybox (``/bin/busybox``, ``/bin/sh``),
  ``/www/index.html`` = ``warren-httpd v1`` (``v2``), ``/www/healthz`` = ``ok``.
  Default command (a shell, so that ``$PORT`` from the driver is honoured)::

      ["/bin/sh", "-c", "exec /bin/busybox httpd -f -v -p \"${PORT:-8080}\" -h /www"]

  Env: ``PORT=8080``, ``VERSION=v1`` (``v2``). Without a shell, the command is
  ``["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]``.
- ``localhost/warren-demo:v1`` and ``:v2`` — this host's Python interpreter (the one running the
  tests, symlinks resolved), its standard library without test suites and tools, the shared
  libraries ``ldd`` lists for it and its extension modules, the dynamic loader, busybox (for exec
  probes), and Warren's demo app twice: ``/app/app.py`` and the package ``/app/warren/demo/app.py``.
  Default command ``["/usr/local/bin/python3", "/app/app.py"]``; ``python3 -m warren.demo.app``
  works as well (``PYTHONPATH=/app``). Env: ``PORT=8080``, ``HOST=0.0.0.0`` (the app's own
  default, 127.0.0.1, is unreachable through a published port), ``VERSION=v1`` (``v2``): ``GET /``
  answers ``{"version": "v1", …}``. Both tags share one root filesystem tar (Podman stores it
  once; dockerd unpacks it twice). ELF files are stripped when binutils' ``strip`` is there.
- ``localhost/warren:VERSION`` (``warren.__version__``) — Warren itself, to run as a server (not
  one of ``IMAGES``: only the tests that run it ensure it). The demo image's Python, and in its
  site-packages the installed ``warren`` package (an editable install's source tree: its modules,
  compiled to ``.pyc`` here, and the ingress's mypyc-compiled extension modules with their shared
  library when they are built) with its runtime dependencies — the closure of its core
  requirements, from this venv (no extras: no aiodocker, no aetcd; no pip or setuptools), with
  their ``.pyc`` of this Python, no tests, no Cython or C sources — and the shared libraries
  ``ldd`` lists for every extension module. ``/usr/local/bin/warren`` is the console script;
  busybox gives ``sh``, ``cat``, ``ls``, ``ps``, ``kill`` and ``wget`` to ``docker exec``.
  ``ENTRYPOINT ["/usr/local/bin/python3", "-m", "warren"]`` (both engines honour ENTRYPOINT in an
  import, as CMD), ``CMD ["server", "--api", "0.0.0.0:7070", "--data-dir", "/data"]``; env
  ``WARREN_DATA_DIR=/data``, ``WARREN_INGRESS_HOST=0.0.0.0`` (the shared port and the services'
  published ports reachable through the engine's published ports), ``PYTHONDONTWRITEBYTECODE=1``,
  ``PYTHONUNBUFFERED=1``; ``/etc/passwd`` has root (home ``/root``); ``/data`` (0700) is the
  working directory. About 86 MB (46 MB of it the demo image's).

Caching: each image carries the label ``org.warren.test.inputs``, a hash of its recipe and of its
inputs' metadata (path, size, mtime). ``ensure_images`` asks the engine for each image (one
``GET /images/{name}/json`` each) and rebuilds only the missing or stale ones: with the images
present it returns in milliseconds. The root filesystem tars are also kept in a cache directory
(``$WARREN_TEST_IMAGE_CACHE``, default ``$TMPDIR/warren-test-images``), so that a second engine
(or a new session with fresh engine storage) only pays for the import.

Run as ``python -m tests.images --socket /path/engine.sock [--force]`` to build by hand (every
image, Warren's included).

Imports nothing of Warren's: it reads Warren's demo app as a file, finds the installed package
without importing it, and reads its version from its ``__init__.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.metadata
import importlib.util
import io
import json
import os
import py_compile
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = [
    "ALL_IMAGES",
    "DEMO",
    "HTTPD",
    "IMAGES",
    "WARREN",
    "WARREN_IMAGE",
    "WARREN_VERSION",
    "EngineAPIError",
    "Image",
    "api_request",
    "ensure_images",
    "image_size",
]

RECIPE = "2"
"""Bump to rebuild every image (the recipe's code is not part of the input hash)."""

LABEL = "org.warren.test.inputs"
API = "/v1.41"
BUSYBOX = Path("/bin/busybox")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_SRC = REPO_ROOT / "src" / "warren"
PATH_ENV = "PATH=/usr/local/bin:/usr/bin:/bin"

HTTPD = "localhost/warren-httpd"
DEMO = "localhost/warren-demo"
WARREN = "localhost/warren"
HTTPD_CMD = ["/bin/sh", "-c", 'exec /bin/busybox httpd -f -v -p "${PORT:-8080}" -h /www']
DEMO_CMD = ["/usr/local/bin/python3", "/app/app.py"]
WARREN_ENTRYPOINT = ["/usr/local/bin/python3", "-m", "warren"]
WARREN_CMD = ["server", "--api", "0.0.0.0:7070", "--data-dir", "/data"]

# Parts of the standard library a web app never needs (site-packages and test/ are most of it).
# Measured with pyenv's 3.11: the image is 46 MB (72 MB when `strip` is missing: see _stripped).
_STDLIB_SKIP_DIRS = {
    "site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo",
    "ensurepip", "lib2to3", "pydoc_data", "distutils", "venv", "__phello__",
}  # fmt: skip
_DYNLOAD_SKIP = re.compile(r"^(_test|_ctypes_test|_xxtestfuzz|xxlimited|_tkinter|xxsubtype)")


class EngineAPIError(RuntimeError):
    """The engine refused a request or answered something unexpected."""


# ── the engine API, over a unix socket ─────────────────────────────────────────────────────────


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def api_request(
    sock_path: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> tuple[int, bytes]:
    """One request to the engine's API (``path`` without the version prefix): (status, body)."""
    conn = _UnixConnection(sock_path, timeout)
    try:
        conn.request(method, API + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _inspect(sock_path: str, ref: str) -> dict[str, Any] | None:
    status, data = api_request(sock_path, "GET", f"/images/{urllib.parse.quote(ref, safe='')}/json")
    if status == 404:
        return None
    if status != 200:
        raise EngineAPIError(f"inspect {ref}: HTTP {status}: {data[:300]!r}")
    result: dict[str, Any] = json.loads(data)
    return result


def image_size(sock_path: str, ref: str) -> int:
    """The image's size in bytes as the engine reports it (0 when absent)."""
    info = _inspect(sock_path, ref)
    return int(info.get("Size", 0)) if info else 0


def _import(sock_path: str, ref: str, tar_path: Path, changes: list[str]) -> None:
    query = urllib.parse.urlencode(
        [("fromSrc", "-"), ("repo", ref), *(("changes", c) for c in changes)]
    )
    size = tar_path.stat().st_size
    with tar_path.open("rb") as body:
        status, data = api_request(
            sock_path,
            "POST",
            f"/images/create?{query}",
            body=body,
            headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
        )
    if status != 200:
        raise EngineAPIError(f"import {ref}: HTTP {status}: {data[:500]!r}")
    # The answer is a stream of JSON messages; errors come inside it with status 200.
    for line in data.splitlines():
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if isinstance(msg, dict) and (msg.get("error") or msg.get("errorDetail")):
                raise EngineAPIError(f"import {ref}: {msg.get('error') or msg['errorDetail']}")


# ── root filesystems ───────────────────────────────────────────────────────────────────────────


@dataclass
class Rootfs:
    """Entries of a root filesystem: files copied from the host, generated files, symlinks."""

    name: str
    files: dict[str, Path] = field(default_factory=dict)  # path in image → host file
    data: dict[str, bytes] = field(default_factory=dict)  # path in image → content
    links: dict[str, str] = field(default_factory=dict)  # path in image → symlink target
    dirs: dict[str, int] = field(default_factory=dict)  # path in image → mode
    resolve_elf: list[str] = field(default_factory=list)  # image paths whose ldd deps to add
    executable: set[str] = field(default_factory=set)  # generated files to write with mode 0755
    bytecode: list[str] = field(default_factory=list)  # .py files to add a .pyc for (see _pycs)

    def fingerprint(self) -> str:
        """A hash of what goes in: host files by (path, size, mtime), generated ones by content.

        Metadata, not content, keeps the check cheap (~2,000 stats for the Python image). The
        shared libraries ``ldd`` finds are covered by ``/etc/ld.so.cache``, which ldconfig
        rewrites whenever a package adds or upgrades a library.
        """
        h = hashlib.sha256(f"{RECIPE}\0{self.name}\0".encode())
        extra = {"/etc/ld.so.cache": Path("/etc/ld.so.cache")} if self.resolve_elf else {}
        for arc, src in sorted({**self.files, **extra}.items()):
            try:
                st = src.stat()
                h.update(f"f\0{arc}\0{src}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            except OSError:
                h.update(f"missing\0{arc}\0".encode())
        for arc, content in sorted(self.data.items()):
            mode = "x" if arc in self.executable else ""
            h.update(f"d{mode}\0{arc}\0{len(content)}\0".encode() + content)
        for arc, target in sorted(self.links.items()):
            h.update(f"l\0{arc}\0{target}\0".encode())
        for arc, mode in sorted(self.dirs.items()):
            h.update(f"D\0{arc}\0{mode}\0".encode())
        for arc in sorted(self.bytecode):
            h.update(f"c\0{arc}\0".encode())
        return h.hexdigest()[:32]

    def _elf_deps(self) -> dict[str, Path]:
        """Shared libraries and the loader, as ``ldd`` lists them, at the paths it gives."""
        if not self.resolve_elf:
            return {}
        out = subprocess.run(
            ["ldd", *(str(self.files[arc]) for arc in self.resolve_elf)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        found: dict[str, Path] = {}
        for line in out.splitlines():
            # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                found.setdefault(m.group(1), Path(os.path.realpath(m.group(1))))
        return found

    @staticmethod
    def _stripped(files: dict[str, Path], scratch: Path) -> dict[str, Path]:
        """Copies of ``files`` without symbols, when binutils' ``strip`` is there.

        A pyenv build's libpython is 23 MB with symbols and 5.7 MB without; its lib-dynload goes
        from 13.7 MB to 5.6 MB. Distribution builds are stripped already, so this changes nothing
        for them.
        """
        strip = shutil.which("strip")
        if not strip or not files:
            return files
        copies = {arc: scratch / f"{i}-{src.name}" for i, (arc, src) in enumerate(files.items())}
        for arc, copy in copies.items():
            shutil.copy2(files[arc], copy)
        done = subprocess.run(
            [strip, "--strip-unneeded", *map(str, copies.values())],
            capture_output=True,
            timeout=120,
        )
        return copies if done.returncode == 0 else files

    def _pycs(self, scratch: Path) -> dict[str, Path]:
        """Bytecode of this Python for ``bytecode``, at the place the import system looks.

        Without it, every process of an image that has no pycs for a package compiles its
        modules at each start (Warren's: about a second of its server's start, and of each
        ``warren`` command). Unchecked hashes: the image's sources never change under them.
        """
        pycs: dict[str, Path] = {}
        tag = sys.implementation.cache_tag
        for i, arc in enumerate(self.bytecode):
            pyc = scratch / f"{i}.pyc"
            py_compile.compile(
                str(self.files[arc]),
                cfile=str(pyc),
                dfile=arc,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            where = Path(arc)  # not cache_from_source: it follows PYTHONPYCACHEPREFIX
            pycs[str(where.parent / "__pycache__" / f"{where.stem}.{tag}.pyc")] = pyc
        return pycs

    def write_tar(self, dest: Path) -> None:
        deps = {k: v for k, v in self._elf_deps().items() if k not in self.files}
        with tempfile.TemporaryDirectory(prefix="warren-rootfs-") as scratch:
            elf = {arc: self.files[arc] for arc in self.resolve_elf} | deps
            sources = {**self.files, **deps, **self._stripped(elf, Path(scratch))}
            sources |= self._pycs(Path(scratch))
            self._write_tar(dest, sources)

    def _write_tar(self, dest: Path, sources: dict[str, Path]) -> None:
        parents: set[str] = set()
        entries = [*sources, *self.data, *self.links, *self.dirs]
        for arc in entries:
            parent = os.path.dirname(arc)
            while parent not in ("/", ""):
                parents.add(parent)
                parent = os.path.dirname(parent)
        with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
            for d in sorted(parents | set(self.dirs)):
                info = tarfile.TarInfo(d.lstrip("/"))
                info.type, info.mode = tarfile.DIRTYPE, self.dirs.get(d, 0o755)
                tar.addfile(info)
            for arc, src in sorted(sources.items()):
                st = src.stat()
                info = tarfile.TarInfo(arc.lstrip("/"))
                info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o7777, st.st_mtime
                with src.open("rb") as f:
                    tar.addfile(info, f)
            for arc, content in sorted(self.data.items()):
                info = tarfile.TarInfo(arc.lstrip("/"))
                info.size, info.mode = len(content), 0o755 if arc in self.executable else 0o644
                tar.addfile(info, io.BytesIO(content))
            for arc, target in sorted(self.links.items()):
                info = tarfile.TarInfo(arc.lstrip("/"))
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)


_BASE_DATA = {
    "/etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "/etc/group": b"root:x:0:\nnogroup:x:65534:\n",
}
_BASE_DIRS = {"/tmp": 0o1777, "/root": 0o700, "/proc": 0o555, "/sys": 0o555, "/dev": 0o755}


def _busybox_files() -> tuple[dict[str, Path], dict[str, str]]:
    return {"/bin/busybox": BUSYBOX}, {"/bin/sh": "busybox"}


def httpd_rootfs(version: str) -> Rootfs:
    files, links = _busybox_files()
    return Rootfs(
        name=f"httpd-{version}",
        files=files,
        links=links,
        data={
            **_BASE_DATA,
            "/www/index.html": f"warren-httpd {version}\n".encode(),
            "/www/healthz": b"ok\n",
        },
        dirs=dict(_BASE_DIRS),
    )


def _python_layout() -> tuple[Path, Path, Path]:
    """(interpreter, stdlib dir, lib-dynload dir) of the Python running this, venv resolved."""
    exe = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_path("stdlib"))
    dynload = Path(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")
    if not dynload.is_dir():
        dynload = next(Path(p) for p in sys.path if p.endswith("lib-dynload"))
    return exe, stdlib, dynload


def _stdlib_files(stdlib: Path, dynload: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    pyc_tag = f".{sys.implementation.cache_tag}.pyc"  # keep plain .pyc, drop .opt-1/.opt-2
    for root, dirnames, filenames in os.walk(stdlib):
        rel = Path(root).relative_to(stdlib)
        if rel == Path("."):
            dirnames[:] = [
                d for d in dirnames if d not in _STDLIB_SKIP_DIRS and not d.startswith("config-")
            ]
        else:
            dirnames[:] = [d for d in dirnames if d not in ("test", "tests", "idle_test")]
        for name in filenames:
            path = Path(root) / name
            if root.endswith("__pycache__") and not name.endswith(pyc_tag):
                continue
            if Path(root) == dynload and _DYNLOAD_SKIP.match(name):
                continue
            if name.endswith((".exe", ".a")) or (path.is_symlink() and not path.exists()):
                continue
            files[str(path)] = path
    if not dynload.is_relative_to(stdlib):
        for path in dynload.iterdir():
            if path.is_file() and not _DYNLOAD_SKIP.match(path.name):
                files[str(path)] = path
    return files


def demo_rootfs() -> Rootfs:
    exe, stdlib, dynload = _python_layout()
    files, links = _busybox_files()
    files.update(_stdlib_files(stdlib, dynload))
    files[str(exe)] = exe
    files["/app/app.py"] = DEMO_SRC / "demo" / "app.py"
    files["/app/warren/__init__.py"] = DEMO_SRC / "__init__.py"
    files["/app/warren/demo/__init__.py"] = DEMO_SRC / "demo" / "__init__.py"
    files["/app/warren/demo/app.py"] = DEMO_SRC / "demo" / "app.py"
    for alias in ("python", "python3", f"python3.{sys.version_info.minor}"):
        if f"/usr/local/bin/{alias}" != str(exe):
            links[f"/usr/local/bin/{alias}"] = str(exe)
    dynamic = [str(exe), *(a for a in files if a.endswith(".so") and a.startswith(str(dynload)))]
    return Rootfs(
        name="demo",
        files=files,
        links=links,
        data=dict(_BASE_DATA),
        dirs=dict(_BASE_DIRS),
        resolve_elf=dynamic,
    )


def _dependencies(name: str) -> list[importlib.metadata.Distribution]:
    """The installed distribution ``name`` and every one it requires, its extras' markers
    evaluated (the core requirements only: none of ``name``'s own extras)."""
    found: dict[str, tuple[importlib.metadata.Distribution, frozenset[str]]] = {}
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset())]
    while todo:
        wanted, extras = todo.pop()
        key = canonicalize_name(wanted)
        if key in found and extras <= found[key][1]:
            continue
        dist = importlib.metadata.distribution(wanted)
        extras |= found[key][1] if key in found else frozenset()
        found[key] = (dist, extras)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append((req.name, frozenset(req.extras)))
    return [dist for dist, _ in found.values()]


# What an installed distribution ships that a running program never reads: Cython and C
# sources (uvloop's are 50 files), its file list, and the path file of an editable install.
_SITE_SKIP_SUFFIXES = (".pyx", ".pxd", ".pxi", ".c", ".h", ".pth")
_SITE_SKIP_NAMES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _distribution_files(dist: importlib.metadata.Distribution, site: Path) -> dict[str, Path]:
    """The files ``dist`` installed into site-packages, at their place under ``site``."""
    files: dict[str, Path] = {}
    pyc_tag = f".{sys.implementation.cache_tag}.pyc"
    for entry in dist.files or []:
        parts = entry.parts
        if parts[0] == ".." or entry.name in _SITE_SKIP_NAMES:
            continue  # scripts in bin/ (the image has its own), and the file lists
        if entry.name.endswith(_SITE_SKIP_SUFFIXES) or {"tests", "test"} & set(parts[:-1]):
            continue
        if "__pycache__" in parts and not entry.name.endswith(pyc_tag):
            continue
        src = Path(dist.locate_file(entry))
        if src.is_file():
            files[str(site.joinpath(*parts))] = src
    return files


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds, without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{package} is not an installed package")
    return Path(next(iter(spec.submodule_search_locations)))


def _package_files(package: str, site: Path) -> dict[str, Path]:
    """The files of the importable ``package`` — wherever it is, an editable install's source
    tree included — under ``site``: modules, data, and extension modules (the ingress compiled
    by mypyc, and the library of shared code its modules import, beside the package)."""
    root = _package_dir(package)
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "build")]
        for name in filenames:
            path = Path(dirpath) / name
            # .stamp: the digest the compiled ingress is checked against (ingress/native.py).
            if name.endswith((".py", ".so", ".stamp", ".typed", ".json", ".html", ".css", ".js")):
                files[str(site / path.relative_to(root.parent))] = path
    for so in [p for arc, p in files.items() if arc.endswith(".so")]:
        for group in set(re.findall(rb"[0-9a-f]{20}__mypyc", so.read_bytes())):
            for lib in root.parent.glob(f"{group.decode()}.*.so"):
                files[str(site / lib.name)] = lib
    return files


def _version_of(package_init: Path) -> str:
    """``__version__`` of a package, read from its ``__init__.py`` (no import)."""
    found = re.search(r'^__version__\s*=\s*"([^"]+)"', package_init.read_text(), re.MULTILINE)
    if not found:
        raise RuntimeError(f"no __version__ in {package_init}")
    return found.group(1)


# `warren` in the image's PATH: the console script, as pip would write it.
_WARREN_SCRIPT = b"""#!/usr/local/bin/python3
import sys
from warren.cli.main import main
sys.exit(main())
"""
# busybox applets a shell in the container (`docker exec`) is expected to have.
_WARREN_APPLETS = ("cat", "ls", "ps", "kill", "wget")


def warren_rootfs() -> Rootfs:
    """The demo image's Python, and Warren with its runtime dependencies in its site-packages."""
    exe, stdlib, dynload = _python_layout()
    site = Path(sysconfig.get_path("purelib", vars={"base": sys.base_prefix}))
    files, links = _busybox_files()
    links.update({f"/bin/{applet}": "busybox" for applet in _WARREN_APPLETS})
    files.update(_stdlib_files(stdlib, dynload))
    files[str(exe)] = exe
    for dist in _dependencies("warren"):
        files.update(_distribution_files(dist, site))
    own = _package_files("warren", site)
    files.update(own)
    for alias in ("python", "python3", f"python3.{sys.version_info.minor}"):
        if f"/usr/local/bin/{alias}" != str(exe):
            links[f"/usr/local/bin/{alias}"] = str(exe)
    dynamic = [str(exe), *(a for a in files if a.endswith(".so"))]
    return Rootfs(
        name="warren",
        files=files,
        links=links,
        data={**_BASE_DATA, "/usr/local/bin/warren": _WARREN_SCRIPT},
        dirs={**_BASE_DIRS, "/data": 0o700},
        resolve_elf=dynamic,
        executable={"/usr/local/bin/warren"},
        bytecode=sorted(arc for arc in own if arc.endswith(".py")),
    )


# ── images ─────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Image:
    ref: str  # "localhost/warren-httpd:v1"
    rootfs: str  # key in _ROOTFS
    changes: tuple[str, ...]


def _httpd(version: str) -> Image:
    return Image(
        f"{HTTPD}:{version}",
        f"httpd-{version}",
        (
            f"CMD {json.dumps(HTTPD_CMD)}",
            f"ENV {PATH_ENV}",
            "ENV PORT=8080",
            f"ENV VERSION={version}",
            "EXPOSE 8080",
            "WORKDIR /www",
        ),
    )


def _demo(version: str) -> Image:
    return Image(
        f"{DEMO}:{version}",
        "demo",
        (
            f"CMD {json.dumps(DEMO_CMD)}",
            f"ENV {PATH_ENV}",
            "ENV PYTHONPATH=/app",
            "ENV PYTHONDONTWRITEBYTECODE=1",
            "ENV PORT=8080",
            "ENV HOST=0.0.0.0",
            f"ENV VERSION={version}",
            "EXPOSE 8080",
            "WORKDIR /app",
        ),
    )


WARREN_VERSION = _version_of(_package_dir("warren") / "__init__.py")


def _warren() -> Image:
    return Image(
        f"{WARREN}:{WARREN_VERSION}",
        "warren",
        (
            f"ENTRYPOINT {json.dumps(WARREN_ENTRYPOINT)}",
            f"CMD {json.dumps(WARREN_CMD)}",
            f"ENV {PATH_ENV}",
            "ENV WARREN_DATA_DIR=/data",
            "ENV WARREN_INGRESS_HOST=0.0.0.0",
            "ENV PYTHONDONTWRITEBYTECODE=1",
            "ENV PYTHONUNBUFFERED=1",
            "EXPOSE 7070",
            "EXPOSE 8000",
            "WORKDIR /data",
        ),
    )


IMAGES: tuple[Image, ...] = (_httpd("v1"), _httpd("v2"), _demo("v1"), _demo("v2"))
"""The images the container tests run (each engine fixture ensures them)."""

WARREN_IMAGE = _warren()
"""Warren's own image: ensured only by the tests that run it (its inputs change with every edit
of Warren's source, and the other tests need not wait for it)."""

ALL_IMAGES: tuple[Image, ...] = (*IMAGES, WARREN_IMAGE)

_ROOTFS = {
    "httpd-v1": lambda: httpd_rootfs("v1"),
    "httpd-v2": lambda: httpd_rootfs("v2"),
    "demo": demo_rootfs,
    "warren": warren_rootfs,
}


def _label(image: Image, fingerprint: str) -> str:
    h = hashlib.sha256(f"{fingerprint}\0{image.ref}\0".encode())
    for change in image.changes:
        h.update(change.encode() + b"\0")
    return h.hexdigest()[:32]


def _cache_dir() -> Path:
    default = Path(tempfile.gettempdir()) / "warren-test-images"
    path = Path(os.environ.get("WARREN_TEST_IMAGE_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cached_tar(rootfs: Rootfs, fingerprint: str) -> Path:
    """The rootfs tar from the cache, written first if absent (atomically: sessions may race)."""
    cache = _cache_dir()
    tar = cache / f"{rootfs.name}-{fingerprint}.tar"
    if not tar.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{rootfs.name}-", dir=cache)
        os.close(fd)
        try:
            rootfs.write_tar(Path(tmp))
            os.chmod(tmp, 0o644)
            os.replace(tmp, tar)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for old in cache.glob(f"{rootfs.name}-*.tar"):  # older versions of the same rootfs
            if old != tar:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
    return tar


def _check_busybox() -> None:
    head = BUSYBOX.read_bytes()[:4096] if BUSYBOX.exists() else b""
    if not head.startswith(b"\x7fELF") or b"ld-linux" in head:
        raise RuntimeError(f"{BUSYBOX} must be a static busybox: apt-get install busybox-static")


def ensure_images(
    socket_path: str,
    force: bool = False,
    log: bool = False,
    images: tuple[Image, ...] = IMAGES,
) -> list[str]:
    """Make every image of ``images`` present and up to date in the engine; return those built.

    Cheap when nothing changed: one fingerprint per rootfs and one inspect per image.
    """
    built: list[str] = []
    roots: dict[str, tuple[Rootfs, str]] = {}
    for image in images:
        if image.rootfs not in roots:
            rootfs = _ROOTFS[image.rootfs]()
            roots[image.rootfs] = (rootfs, rootfs.fingerprint())
        rootfs, fingerprint = roots[image.rootfs]
        label = _label(image, fingerprint)
        info = None if force else _inspect(socket_path, image.ref)
        if info and (info.get("Config") or {}).get("Labels", {}).get(LABEL) == label:
            continue
        if image.rootfs.startswith("httpd"):
            _check_busybox()
        start = time.monotonic()
        tar = _cached_tar(rootfs, fingerprint)
        tar_done = time.monotonic()
        _import(socket_path, image.ref, tar, [*image.changes, f"LABEL {LABEL}={label}"])
        built.append(image.ref)
        if log:
            print(
                f"{image.ref}: tar {tar_done - start:.2f}s ({tar.stat().st_size / 1e6:.1f} MB), "
                f"import {time.monotonic() - tar_done:.2f}s, "
                f"size {image_size(socket_path, image.ref) / 1e6:.1f} MB",
                flush=True,
            )
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.images", description=__doc__)
    parser.add_argument("--socket", required=True, help="the engine's API socket")
    parser.add_argument("--force", action="store_true", help="import even if up to date")
    args = parser.parse_args(argv)
    start = time.monotonic()
    built = ensure_images(args.socket, force=args.force, log=True, images=ALL_IMAGES)
    print(f"{len(built)} image(s) imported in {time.monotonic() - start:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
