"""The choice between the ingress compiled by mypyc and its source: a build is used only while it
was made from the sources as they are, WARREN_PURE=1 asks for the source, and `make` (what CI
runs) builds it where a C compiler is."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from warren.ingress import native


def test_a_build_is_fresh_only_for_the_sources_it_was_made_from(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    stamp = tmp_path / "compiled.stamp"
    assert not native.fresh([a, b], stamp)
    stamp.write_text(native.digest([a, b]) + "\n")
    assert native.fresh([a, b], stamp)
    a.write_text("x = 3\n")
    assert not native.fresh([a, b], stamp)
    assert not native.compiled([a, b])
    (tmp_path / "a.cpython-311-x86_64-linux-gnu.so").touch()
    assert not native.compiled([a, b])
    (tmp_path / "b.cpython-311-x86_64-linux-gnu.so").touch()
    assert native.compiled([a, b])


def test_the_hot_path_is_compiled_and_nothing_else() -> None:
    assert {p.stem for p in native.sources()} == {
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
    }
    assert all(p.is_file() for p in native.sources())


def build_in(env: dict[str, str]) -> list[str]:
    """COMPILED, and where proxy and routing were found, in a new interpreter."""
    code = (
        "import warren.ingress as i, warren.ingress.proxy as p, warren.ingress.routing as r;"
        "print(i.COMPILED, p.__file__, r.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=os.environ | env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_pure_asks_for_the_source() -> None:
    compiled, proxy, routing = build_in({"WARREN_PURE": "1"})
    assert compiled == "False"
    assert proxy.endswith("proxy.py") and routing.endswith("routing.py")


def test_the_build_that_runs_is_the_one_make_made() -> None:
    compiled, proxy, routing = build_in({"WARREN_PURE": ""})
    built = native.compiled(native.sources()) and native.fresh(native.sources(), native.STAMP)
    assert compiled == str(built)
    assert proxy.endswith(".so" if built else ".py") and routing.endswith(".so" if built else ".py")
    if os.environ.get("CI") == "true":
        # CI runs `make test`, which compiles: the suite has run against the compiled ingress.
        assert built, "make did not compile the ingress"


def test_a_build_of_some_modules_only_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module added to the hot path since the last build has none: the others' builds are
    older than their sources, and must not be imported either (the sources run, all of them)."""
    package = tmp_path / "halfbuilt"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in native.HOT_PATH:
        (package / f"{name}.py").write_text(f"WHAT = {name!r}\n")
    first = native.HOT_PATH[0]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (package / f"{first}{suffix}").write_bytes(b"an old build")  # imported, it would fail
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    try:
        assert native.choose("halfbuilt", package) is False
        assert first == importlib.import_module(f"halfbuilt.{first}").WHAT
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "halfbuilt"]:
            del sys.modules[name]
