"""Managers on an etcd that serves clients over TLS and asks each for a certificate
(``--client-cert-auth``): ``warren server --store etcds://… --etcd-ca --etcd-cert --etcd-key``
runs and keeps its state there; without a certificate etcd accepts it stops at start in one line
(exit 1); with a certificate but no key, or a file it cannot read, it does not start at all
(exit 2).

The real thing: ``warren server`` processes on the session's TLS etcd (tests/etcd.py), each test
under a prefix of its own. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.etcd import EtcdCluster, EtcdTlsFiles
from tests.servers import ServerProcess, free_port, warren
from warren.store.etcd import EtcdStore, EtcdTls

pytestmark = pytest.mark.integration

DEMO = "python -m warren.demo.app"


def url(server: EtcdCluster, prefix: str) -> str:
    return f"etcds://{server.endpoints[0]}{prefix}"


def run_server(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """``warren server FLAGS`` that is expected to stop by itself, at start."""
    return subprocess.run(
        [sys.executable, "-m", "warren", "server", "--data-dir", str(tmp_path / "data"),
         "--api", f"127.0.0.1:{free_port()}", "--http-port", str(free_port()), *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_server_keeps_its_state_in_an_etcd_over_tls(
    etcd_tls_server: tuple[EtcdCluster, EtcdTlsFiles],
    etcd_prefix: str,
    server_factory: Callable[..., ServerProcess],
) -> None:
    etcd, files = etcd_tls_server
    # The CA as a flag, the client certificate from the environment, as a unit file may set it.
    flags = ["--store", url(etcd, etcd_prefix), "--etcd-ca", str(files.ca)]
    environ = {"WARREN_ETCD_CERT": str(files.client_cert), "WARREN_ETCD_KEY": str(files.client_key)}
    server = server_factory(extra=flags, environ=environ).start()
    created = warren(server, "service", "create", "web", "--command", DEMO, "-r", "1")
    assert created.returncode == 0, created.stdout + created.stderr
    assert "service web: 1/1 tasks ready" in created.stdout

    async def in_etcd() -> list[str]:
        tls = EtcdTls.load(str(files.ca), str(files.client_cert), str(files.client_key))
        store = EtcdStore(etcd.endpoints, prefix=etcd_prefix, tls=tls)
        try:
            kvs, _ = await store.range("/services/")
            return [kv.key for kv in kvs]
        finally:
            await store.delete("/", prefix=True)
            await store.close()

    server.stop()
    assert "/services/web" in asyncio.run(in_etcd())


def test_a_server_without_a_certificate_etcd_accepts_stops_in_one_line(
    etcd_tls_server: tuple[EtcdCluster, EtcdTlsFiles], etcd_prefix: str, tmp_path: Path
) -> None:
    etcd, files = etcd_tls_server
    done = run_server(tmp_path, "--store", url(etcd, etcd_prefix), "--etcd-ca", str(files.ca))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: etcd is unreachable at "), lines[0]
    assert "TLS: it refused this client's certificate, or wants one" in lines[0]


def test_tls_files_given_wrong_are_a_usage_error(
    etcd_tls_server: tuple[EtcdCluster, EtcdTlsFiles], etcd_prefix: str, tmp_path: Path
) -> None:
    etcd, files = etcd_tls_server
    done = run_server(
        tmp_path, "--store", url(etcd, etcd_prefix), "--etcd-cert", str(files.client_cert)
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: give both --etcd-cert and --etcd-key, or neither (see `warren server -h`)"
    ]
    unreadable = tmp_path / "absent.pem"
    done = run_server(tmp_path, "--store", url(etcd, etcd_prefix), "--etcd-ca", str(unreadable))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot read --etcd-ca {unreadable}: No such file or directory "
        "(see `warren server -h`)"
    ]
