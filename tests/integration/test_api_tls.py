"""Warren's API over HTTPS (``warren server --api-tls-cert --api-tls-key``): a real server with a
certificate of a CA of the test's own (trustme), the CLI verifying it with ``WARREN_CA``, and the
server's embedded worker and ingress process following it over https; plain HTTP and a client
without the CA are refused, each in one line; flags given by halves or files that cannot load
are refused before anything starts."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.integration.test_tls import write_pair
from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.api.serving import HttpServer
from warren.client import unverified, verifying
from warren.ingress.tls import server_context

pytestmark = pytest.mark.integration

DEMO = "python -m warren.demo.app"


def test_the_cli_and_the_ingress_process_reach_the_api_over_https(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    ca = trustme.CA()
    chain, key = write_pair(ca, tmp_path)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # From the environment, as a unit file would set them.
    environ = {"WARREN_API_TLS_CERT": str(chain), "WARREN_API_TLS_KEY": str(key)}
    server = server_factory(environ=environ)
    server.ca = ca_file
    server.start()
    assert f"API      https://127.0.0.1:{server.api_port}" in server.log()

    port = free_port()
    created = warren(server, "service", "create", "web", "--command", DEMO, "-r", "1",
                     "--publish", str(port), "--health-http", "/healthz",
                     "--monitor", "500ms")  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert "service web: 1/1 tasks ready" in created.stdout

    # The ingress process learnt the route from the API's routing stream, over https.
    def through_the_ingress() -> bool:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200

    wait_for(through_the_ingress, 15, "the ingress process to route the service")

    # Plain HTTP on the API's port is no API.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.api_port}/healthz", timeout=5)

    # Without the CA, the certificate does not verify: one line, exit 1.
    env = {k: v for k, v in server.env().items() if k != "WARREN_CA"}
    listed = subprocess.run(
        [sys.executable, "-m", "warren", "service", "ls"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 1, listed.stdout + listed.stderr
    assert listed.stderr.strip() == (
        f"error: cannot verify the server's certificate at https://127.0.0.1:{server.api_port}: "
        "unable to get local issuer certificate (give its CA bundle with --ca or WARREN_CA)"
    )


def _server(data_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_")}
    return subprocess.run(
        [sys.executable, "-m", "warren", "server", "--data-dir", str(data_dir),
         "--api", "127.0.0.1:0", "--http-port", "0", *flags],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_tls_flags_by_halves_or_unloadable_files_are_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    chain, key = write_pair(ca, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    other_key = write_pair(trustme.CA(), other)[1]
    data = tmp_path / "data"

    halves = _server(data, "--api-tls-cert", str(chain))
    assert halves.returncode == 2, halves.stdout + halves.stderr
    assert halves.stderr.strip() == (
        "error: give both --api-tls-cert and --api-tls-key, or neither (see `warren server -h`)"
    )

    for cert_file, key_file, reason in [
        (tmp_path / "missing.pem", key, "No such file or directory"),
        (chain, other_key, "the key is not the certificate's"),
        (key, key, "not a PEM certificate chain and its key"),
    ]:
        refused = _server(data, "--api-tls-cert", str(cert_file), "--api-tls-key", str(key_file))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, refused.stderr
        assert lines[0].startswith(f"error: cannot load the certificate {cert_file}"), lines
        assert reason in lines[0], lines
        assert not data.exists()  # nothing started: not even the data dir made


async def _hello(scope: dict[str, object], receive: object, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_a_pinned_certificate_is_trusted_alone_whatever_its_names(tmp_path: Path) -> None:
    """What a server gives the ingress process it supervises: its own certificate, which
    need not name the loopback address the ingress reaches it on."""
    ca = trustme.CA()
    chain, key = write_pair(ca, tmp_path, "warren.example")
    sibling = tmp_path / "sibling"
    sibling.mkdir()
    sibling_chain = write_pair(ca, sibling, "warren.example")[0]
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    http = HttpServer("127.0.0.1:0", tls=server_context(str(chain), str(key)))
    await http.start(_hello)
    try:

        async def get(verify: ssl.SSLContext | bool) -> str:
            async with httpx.AsyncClient(verify=verify, trust_env=False, timeout=5) as c:
                return (await c.get(http.url)).text

        assert await get(verifying(pinned=str(chain))) == "hello"
        # By the CA, the name is checked: 127.0.0.1 is not warren.example.
        with pytest.raises(httpx.ConnectError) as refused:
            await get(verifying(str(ca_file)))
        assert "IP address mismatch" in str(unverified(refused.value))
        # Another certificate of the same CA is not the one pinned.
        with pytest.raises(httpx.ConnectError) as refused:
            await get(verifying(pinned=str(sibling_chain)))
        assert unverified(refused.value) is not None
    finally:
        await http.stop()
