"""Which build of the ingress runs: compiled by mypyc, or the Python source.

``make`` compiles the ingress's modules in place when a C compiler and Python's headers are
there (``python src/warren/ingress/native.py compile``), and writes ``compiled.stamp``: the
digest of the sources it compiled. Python imports a compiled module before its source, so a
module edited since would run as it was: ``choose`` (called by the package before it imports
anything) has the sources found first instead when the digest no longer matches, or when
``WARREN_PURE=1`` asks for them, or when some modules have no build (added since it was made).
The compiled modules are used all together or not at all: they call each other directly, not
through ``sys.modules``.

Must not import anything of Warren's: it runs before the rest of the package is imported.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["HOT_PATH", "STAMP", "choose", "compile_here", "compiled", "digest", "fresh", "sources"]

log = logging.getLogger("warren.ingress")

HERE = Path(__file__).parent
STAMP = HERE / "compiled.stamp"
HOT_PATH = (
    "limits",
    "routing",
    "tls",
    "messages",
    "counters",
    "tunnel",
    "upstream",
    "exchange",
    "downstream",
    "proxy",
)
"""The modules compiled: those a request goes through, each after those it imports. They are
compiled in one group, so that their calls to each other stay native. The rest of the package (and
this chooser, which runs before them) stays Python."""


def sources(where: Path = HERE) -> list[Path]:
    """The modules compiled, as files."""
    return [where / f"{name}.py" for name in HOT_PATH]


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{sys.implementation.cache_tag} {h.hexdigest()}"


def fresh(paths: list[Path], stamp: Path) -> bool:
    """Whether ``stamp`` says the build was made from ``paths`` as they are now."""
    return stamp.is_file() and stamp.read_text().strip() == digest(paths)


def compiled(paths: list[Path]) -> bool:
    """Whether every module of ``paths`` has a compiled build next to it."""
    return all(list(p.parent.glob(f"{p.stem}.*.so")) for p in paths)


def choose(package: str, where: Path = HERE) -> bool:
    """Decide for ``package`` (this package's name; its modules in ``where``): True when its
    compiled modules will be imported, False when its sources have been loaded in their place."""
    paths = sources(where)
    built = [p for p in paths if compiled([p])]
    if not built:
        return False  # nothing compiled: Python finds the sources
    wanted = os.environ.get("WARREN_PURE", "") not in ("1", "true")
    if wanted and len(built) == len(paths) and fresh(paths, where / STAMP.name):
        return True
    # Some or all have a build that is not to run: older than their sources, or a build of
    # some modules only (one added to the hot path since has none), or not wanted.
    if wanted:
        log.warning(
            "ingress: its compiled build is older than its source; running the source "
            "(`make` compiles it again)"
        )
    sys.meta_path.insert(0, _Sources({f"{package}.{p.stem}": p for p in paths}))
    return False


class _Sources(importlib.abc.MetaPathFinder):
    """Finds the given modules as their source files, ahead of the compiled builds beside them."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self._paths = paths

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        found = self._paths.get(fullname)
        return importlib.util.spec_from_file_location(fullname, found) if found else None


def compile_here() -> str:
    """Compile the modules in place (mypyc) and stamp the build; what was done, in one line."""
    include = sysconfig.get_paths()["include"]
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler (cc): the ingress runs as Python"
    if not (Path(include) / "Python.h").is_file():
        return f"no Python headers ({include}/Python.h): the ingress runs as Python"
    if importlib.util.find_spec("mypyc") is None:
        return "no mypyc (pip install mypy): the ingress runs as Python"
    src = HERE.parent.parent
    for old in [*src.glob("*__mypyc.*.so"), *HERE.glob("*.so")]:
        old.unlink()
    STAMP.unlink(missing_ok=True)
    paths = sources()
    names = [str(p.relative_to(src)) for p in paths]
    try:
        subprocess.run(
            [sys.executable, "-m", "mypyc", *names],
            cwd=src,
            check=True,
            stdout=subprocess.DEVNULL,
            env=os.environ | {"MYPYC_OPT_LEVEL": "3"},
        )
    finally:
        shutil.rmtree(src / "build", ignore_errors=True)
    STAMP.write_text(digest(paths) + "\n")
    return f"compiled with mypyc: {', '.join(p.stem for p in paths)}"


if __name__ == "__main__":
    # `python src/warren/ingress/native.py compile` (what make runs): by its path, so that the
    # package, which may hold an older build, is not imported.
    if sys.argv[1:] != ["compile"]:
        sys.exit("usage: native.py compile")
    print(f"ingress: {compile_here()}")
