"""What a user who installs ``warren`` without extras gets: the etcd store (aetcd, gRPC) and the
docker driver (aiodocker, aiohttp) are loaded only when chosen, and choosing one whose extra is
not installed is one line naming the extra, with exit status 2 — never a traceback.

Each case runs in a fresh interpreter: this one has loaded the optional libraries already (other
tests use them), and a blocked library is simulated with ``sys.modules[NAME] = None``, which makes
``import NAME`` raise ModuleNotFoundError as an absent library does."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from warren import __version__

OPTIONAL = ("aetcd", "grpc", "aiodocker", "aiohttp")
BOUND = 60.0


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=BOUND,
        cwd=tmp_path,
        env={**os.environ, "WARREN_DEBUG": "", **env},
        check=False,
    )


def run_cli(
    args: list[str], tmp_path: Path, blocked: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """``warren ARGS`` as the console script runs it, with ``blocked`` libraries absent."""
    return run_python(
        f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None
        sys.argv = ["warren", *{args!r}]
        from warren.cli.main import main
        main()
        """,
        tmp_path,
        **env,
    )


def test_a_server_on_sqlite_with_processes_loads_no_optional_library(tmp_path: Path) -> None:
    # What `warren server` builds on the default store, on a machine with no container engine
    # (DOCKER_HOST names none that Warren can reach: it looks for no other).
    result = run_python(
        f"""
        import sys
        from pathlib import Path
        import warren.cli.main, warren.server, warren.worker
        from warren.agent.runtimes import local_runtimes
        from warren.clocks import SystemClock
        from warren.store import open_store

        data = Path({str(tmp_path)!r})
        open_store("sqlite", data, SystemClock())
        drivers = local_runtimes(data, "n1", SystemClock())
        assert sorted(drivers) == ["fake", "process"], sorted(drivers)
        print(",".join(m for m in {OPTIONAL!r} if m in sys.modules))
        """,
        tmp_path,
        DOCKER_HOST="tcp://127.0.0.1:2375",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"loaded: {result.stdout.strip()}"


def test_the_etcd_store_without_its_extra_is_one_line_and_status_2(tmp_path: Path) -> None:
    args = ["server", "--store", "etcd://127.0.0.1:2379", "--data-dir", str(tmp_path / "data")]
    result = run_cli([*args, "--api", "127.0.0.1:0", "--http-port", "0"], tmp_path, ("aetcd",))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: the etcd store needs the etcd extra: pip install 'warren[etcd]'"
    )


def test_a_docker_network_without_the_docker_extra_is_one_line_and_status_2(
    tmp_path: Path,
) -> None:
    # --docker-network asks for containers: without aiodocker that is a usage error, at once.
    result = run_python(
        f"""
        import sys
        sys.modules["aiodocker"] = None
        from pathlib import Path
        from warren.agent.runtimes import local_runtimes
        from warren.clocks import SystemClock
        from warren.domain.errors import MissingExtraError

        try:
            local_runtimes(Path({str(tmp_path)!r}), "n1", SystemClock(), docker_network="apps")
        except MissingExtraError as exc:
            print(exc.message)
        """,
        tmp_path,
        DOCKER_HOST=f"unix://{tmp_path}/docker.sock",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "the docker driver needs the docker extra: pip install 'warren[docker]'"
    )


def test_an_engine_without_the_docker_extra_leaves_the_driver_off_and_says_why(
    tmp_path: Path,
) -> None:
    # A core install on a host with Docker: process tasks still run; the log says what is missing.
    result = run_python(
        f"""
        import logging, sys
        sys.modules["aiodocker"] = None
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        from pathlib import Path
        from warren.agent.runtimes import local_runtimes
        from warren.clocks import SystemClock

        drivers = local_runtimes(Path({str(tmp_path)!r}), "n1", SystemClock())
        print(",".join(sorted(drivers)))
        """,
        tmp_path,
        DOCKER_HOST=f"unix://{tmp_path}/docker.sock",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fake,process"
    assert (
        f"a container engine is at {tmp_path}/docker.sock, but the docker driver needs the "
        "docker extra: pip install 'warren[docker]'; the docker driver is off"
    ) in result.stderr


def test_version_long_and_short(tmp_path: Path) -> None:
    for flag in ("--version", "-V"):
        result = run_cli([flag], tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"warren {__version__}"


def test_the_installed_version_is_the_one_in_the_source() -> None:
    # pyproject reads it from warren.__version__: one place to change at a release.
    assert importlib.metadata.version("warren") == __version__
