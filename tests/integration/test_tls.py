"""TLS on a published port, through the CLI: a certificate made by the test (trustme), refused at
admission with one line when it cannot load, and ports added and removed one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from tests.servers import ServerProcess, free_port, warren

pytestmark = pytest.mark.integration


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path, trustme.CA]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key, ca


def test_a_certificate_that_cannot_load_is_refused_with_one_line(
    server: ServerProcess, certificate: tuple[Path, Path, trustme.CA], tmp_path: Path
) -> None:
    chain, key, _ = certificate
    port = free_port()
    base = ["service", "create", "web", "--command", "python -m warren.demo.app"]
    missing = warren(server, *base, "--publish", f"{port}/tls", "--tls-cert",
                     str(tmp_path / "nope.pem"), "--tls-key", str(key))  # fmt: skip
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: ports[0].tls: no such file: {tmp_path / 'nope.pem'}"
    ]
    other = trustme.CA().issue_cert("localhost")
    wrong_key = tmp_path / "other.key"
    wrong_key.write_bytes(other.private_key_pem.bytes())
    mismatch = warren(server, *base, "--publish", f"{port}/tls", "--tls-cert", str(chain),
                      "--tls-key", str(wrong_key))  # fmt: skip
    assert mismatch.returncode == 1
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
    assert gone.returncode == 1 and f"port {plain} is not published" in gone.stderr
