"""TLS on a published port: the ingress terminates it (TLS 1.2 and up, ``X-Forwarded-Proto:
https`` to the task) and reloads a certificate whose files change; through the CLI, a certificate
that cannot load is refused at admission with one line, ports are added and removed one by one,
and a service is served over TLS end to end. Certificates are made by the test (trustme)."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from pathlib import Path

import httpx
import pytest
import trustme

from tests.integration import test_ingress
from tests.integration.test_ingress import WAIT, Factory, IngressFactory
from tests.servers import ServerProcess, free_port, wait_for, warren
from warren.ingress import Ingress
from warren.ports import Route

pytestmark = pytest.mark.integration

# The ingress tests' fixtures: an ingress made and closed per test, upstreams, and no error logged.
make_ingress = test_ingress.make_ingress
upstream = test_ingress.upstream
no_errors_logged = test_ingress.no_errors_logged


def write_pair(ca: trustme.CA, where: Path, *names: str) -> tuple[Path, Path]:
    """A certificate for ``names`` signed by ``ca``: its chain and key files under ``where``."""
    cert = ca.issue_cert(*(names or ("127.0.0.1", "localhost")))
    chain, key = where / "chain.pem", where / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key


def https(port: int, ca: trustme.CA) -> httpx.AsyncClient:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return httpx.AsyncClient(
        base_url=f"https://127.0.0.1:{port}", verify=context, trust_env=False, timeout=WAIT
    )


async def served_by(port: int, ca: trustme.CA) -> bool:
    try:
        async with https(port, ca) as c:
            return (await c.get("/")).status_code == 200
    except httpx.HTTPError:
        return False


async def eventually(check: object, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await check():  # type: ignore[operator]
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def tls_route(ingress: Ingress, u: object, port: int, chain: Path, key: Path) -> None:
    await ingress.update(
        {
            "web": Route(
                "web",
                ports=(port,),
                endpoints=(u.endpoint(),),  # type: ignore[attr-defined]
                tls=((port, str(chain), str(key)),),
            )
        }
    )


async def test_tls_is_terminated_and_the_task_told_so(
    make_ingress: IngressFactory, upstream: Factory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    chain, key = write_pair(ca, tmp_path)
    ingress = await make_ingress()
    u = await upstream("u")
    port = free_port()
    await tls_route(ingress, u, port, chain, key)
    assert ingress.listening == {port} and not ingress.problems
    async with https(port, ca) as c:
        r = await c.get("/hello", headers={"Host": "web.test"})
        assert r.status_code == 200
        assert r.headers["x-upstream"] == "u"
    seen = u.requests[0]
    assert seen.headers["x-forwarded-proto"] == "https"
    assert seen.target == "/hello"
    # Plain HTTP on a TLS port is not served; TLS 1.1 is refused at the handshake.
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get(f"http://127.0.0.1:{port}/")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(old)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would speak TLS 1.1: the server won't
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, OSError)):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=old), WAIT)
    assert len(u.requests) == 1


async def test_a_changed_certificate_is_reloaded_and_a_bad_one_is_not(
    make_ingress: IngressFactory, upstream: Factory, tmp_path: Path
) -> None:
    first, second = trustme.CA(), trustme.CA()
    chain, key = write_pair(first, tmp_path)
    ingress = await make_ingress()
    port = free_port()
    await tls_route(ingress, await upstream("u"), port, chain, key)
    async with https(port, first) as c:  # a connection kept across the reload
        assert (await c.get("/")).status_code == 200
        assert not await served_by(port, second)

        write_pair(second, tmp_path)
        await eventually(lambda: served_by(port, second), "the new certificate to be served")
        assert not await served_by(port, first)
        assert (await c.get("/")).status_code == 200  # the open connection was not cut

    # Half-written files (a key that does not match): the last good certificate keeps serving.
    other = second.issue_cert("localhost")
    key.write_bytes(other.private_key_pem.bytes())
    assert ingress._certificates.reload_changed() == []
    assert await served_by(port, second)


async def test_a_port_goes_from_plain_to_tls_and_a_bad_certificate_is_a_problem(
    make_ingress: IngressFactory, upstream: Factory, tmp_path: Path
) -> None:
    ca = trustme.CA()
    chain, key = write_pair(ca, tmp_path)
    ingress = await make_ingress()
    u = await upstream("u")
    port = free_port()
    await ingress.update({"web": Route("web", ports=(port,), endpoints=(u.endpoint(),))})
    async with httpx.AsyncClient(trust_env=False, timeout=WAIT) as plain:
        assert (await plain.get(f"http://127.0.0.1:{port}/")).status_code == 200
    await tls_route(ingress, u, port, chain, key)
    assert await served_by(port, ca)
    assert u.requests[-1].headers["x-forwarded-proto"] == "https"

    await tls_route(ingress, u, port, tmp_path / "missing.pem", key)
    assert port not in ingress.listening
    assert ingress.problems[port].startswith(f"cannot load the certificate {tmp_path}")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path, trustme.CA]:
    ca = trustme.CA()
    return *write_pair(ca, tmp_path), ca


def test_a_certificate_that_cannot_load_is_refused_with_one_line(
    server: ServerProcess, certificate: tuple[Path, Path, trustme.CA], tmp_path: Path
) -> None:
    chain, key, _ = certificate
    port = free_port()
    base = ["service", "create", "web", "--command", "python -m warren.demo.app"]
    missing = warren(server, *base, "--publish", f"{port}/tls", "--tls-cert",
                     str(tmp_path / "nope.pem"), "--tls-key", str(key))  # fmt: skip
    assert missing.returncode == 2  # a bad value, as the server found it
    assert missing.stderr.strip().splitlines() == [
        f"error: ports[0].tls: no such file: {tmp_path / 'nope.pem'} "
        "(see `warren service create -h`)"
    ]
    other = trustme.CA().issue_cert("localhost")
    wrong_key = tmp_path / "other.key"
    wrong_key.write_bytes(other.private_key_pem.bytes())
    mismatch = warren(server, *base, "--publish", f"{port}/tls", "--tls-cert", str(chain),
                      "--tls-key", str(wrong_key))  # fmt: skip
    assert mismatch.returncode == 2
    assert "ports[0].tls: cannot load the certificate" in mismatch.stderr
    assert len(mismatch.stderr.strip().splitlines()) == 1
    client = server.client()
    assert [s.name for s in client.list_services()] == []

    created = warren(server, *base, "--publish", f"{port}:8080/tls", "--tls-cert", str(chain),
                     "--tls-key", str(key))  # fmt: skip
    assert created.returncode == 0, created.stderr
    (tls,) = client.get_service("web").spec.ports
    assert tls.tls is not None and (tls.tls.cert, tls.tls.key) == (str(chain), str(key))


def test_ports_are_added_and_removed_one_by_one(
    server: ServerProcess, certificate: tuple[Path, Path, trustme.CA]
) -> None:
    chain, key, _ = certificate
    plain, secure = free_port(), free_port()
    created = warren(server, "service", "create", "web", "--command",
                     "python -m warren.demo.app", "--publish", str(plain))  # fmt: skip
    assert created.returncode == 0, created.stderr
    added = warren(server, "service", "update", "web", "--publish-add", f"{secure}/tls",
                   "--tls-cert", str(chain), "--tls-key", str(key), "--detach")  # fmt: skip
    assert added.returncode == 0, added.stderr
    ports = server.client().get_service("web").spec.ports
    assert [(p.published, p.tls is not None) for p in ports] == [(plain, False), (secure, True)]
    removed = warren(server, "service", "update", "web", "--publish-rm", str(plain), "--detach")
    assert removed.returncode == 0, removed.stderr
    assert [p.published for p in server.client().get_service("web").spec.ports] == [secure]
    gone = warren(server, "service", "update", "web", "--publish-rm", str(plain))
    assert gone.returncode == 2 and f"port {plain} is not published" in gone.stderr


def test_a_service_is_served_over_tls_end_to_end(server: ServerProcess, tmp_path: Path) -> None:
    ca = trustme.CA()
    chain, key = write_pair(ca, tmp_path)
    port = free_port()
    created = warren(server, "service", "create", "web", "--command", "python -m warren.demo.app",
                     "--replicas", "2", "--publish", f"{port}/tls", "--tls-cert", str(chain),
                     "--tls-key", str(key), "--env", "VERSION=v1")  # fmt: skip
    assert created.returncode == 0, created.stderr
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def answered() -> bool:
        try:
            r = httpx.get(f"https://localhost:{port}/", verify=context, trust_env=False, timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and "v1" in r.text

    wait_for(answered, 30, "the service to answer over TLS")
