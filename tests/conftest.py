"""Suite-wide rules: under CI=true a skipped test fails the run (nothing may be skipped in CI)."""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _skipped:
        print(f"\nCI=true: {len(_skipped)} test(s) skipped, which CI does not allow:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Real-server fixtures, shared by integration and end-to-end tests.
from tests.cluster import cluster  # noqa: E402, F401
from tests.containers import container_server  # noqa: E402, F401
from tests.engines import dockerd_engine, each_engine, podman_engine  # noqa: E402, F401
from tests.etcd import (  # noqa: E402, F401
    etcd_cluster,
    etcd_prefix,
    etcd_server,
    etcd_tls_server,
)
from tests.netns import hosts  # noqa: E402, F401
from tests.servers import server, server_factory  # noqa: E402, F401
