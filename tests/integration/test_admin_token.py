"""``warren cluster admin-token --rotate``, as an operator runs it: the old token stops working
at once, the new one works, the server's ``admin.token`` holds it (so the CLI on the server's
machine goes on working, and so does a restart); with two managers on one etcd, the other one
takes the new token within moments and refuses the old one."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from tests.etcd import EtcdCluster
from tests.integration.test_managers import manager, start
from tests.servers import ServerProcess, wait_for, warren
from warren.paths import token_path

pytestmark = pytest.mark.integration


def _status(srv: ServerProcess, token: str) -> int:
    answer = httpx.get(
        f"{srv.addr}/v1/services", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    return answer.status_code


def test_a_rotated_token_replaces_the_old_one_at_once(server: ServerProcess) -> None:
    old = token_path(server.data_dir).read_text().strip()
    rotated = warren(server, "cluster", "admin-token", "--rotate", "-q")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert new and new != old
    assert (_status(server, old), _status(server, new)) == (401, 200)
    assert token_path(server.data_dir).read_text().strip() == new
    assert os.stat(token_path(server.data_dir)).st_mode & 0o777 == 0o600
    # The CLI on the server's machine reads the file: it goes on working.
    assert warren(server, "service", "ls").returncode == 0
    server.stop()
    server.start()
    assert (_status(server, old), _status(server, new)) == (401, 200)
    events = warren(server, "events", "-o", "json").stdout
    assert "the admin token was rotated" in events and new not in events
    refused = warren(server, "cluster", "admin-token")
    assert refused.returncode == 2 and "give --rotate" in refused.stderr


def test_every_manager_takes_the_rotated_token(
    etcd_server: EtcdCluster, etcd_prefix: str, server_factory: Callable[..., ServerProcess]
) -> None:
    url = f"etcd://{etcd_server.endpoints[0]}{etcd_prefix}"
    a = start(manager(server_factory, "mgr-a", url))
    b = start(manager(server_factory, "mgr-b", url))
    old = token_path(a.data_dir).read_text().strip()
    assert token_path(b.data_dir).read_text().strip() == old  # the cluster's one token
    rotated = warren(a, "cluster", "admin-token", "--rotate", "-q")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    wait_for(lambda: _status(b, old) == 401, 10, "the other manager to refuse the old token")
    assert _status(b, new) == 200
    wait_for(lambda: token_path(b.data_dir).read_text().strip() == new, 10, "b's admin.token")
