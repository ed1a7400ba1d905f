"""A spec that departs from the release practices is created, updated and applied as asked, with
a warning on stderr for each departure (stdout, which scripts read, stays as it was)."""

from __future__ import annotations

from pathlib import Path

from tests.servers import ServerProcess, warren

COMMAND = "python -m warren.demo.app"


def test_create_update_and_apply_warn_and_do_what_was_asked(
    server: ServerProcess, tmp_path: Path
) -> None:
    created = warren(
        server, "service", "create", "web", "--command", COMMAND, "--replicas", "2", "--detach"
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "service web created (revision 1)"
    assert "warning: service web: no health check" in created.stderr
    updated = warren(
        server, "service", "update", "web", "--parallelism", "0", "--monitor", "0s", "--detach"
    )
    assert updated.returncode == 0, updated.stderr
    assert "parallelism 0 replaces all 2 tasks at once" in updated.stderr
    assert "monitor 0s" in updated.stderr
    assert "Traceback" not in created.stderr + updated.stderr

    spec = tmp_path / "api.yaml"
    spec.write_text(
        "apiVersion: warren.io/v1\nkind: Service\nmetadata: {name: api}\n"
        f"spec:\n  command: {COMMAND}\n  healthCheck: {{http: {{path: /healthz}}}}\n"
    )
    applied = warren(server, "apply", "-f", str(spec))
    assert applied.returncode == 0, applied.stderr
    assert "warning" not in applied.stderr  # a health check, rolling one at a time, monitored
