"""``--publish PORT[:TARGET][/tls]`` with ``--tls-cert``/``--tls-key``, and ``--publish-add`` /
``--publish-rm`` on the current ports, as ``docker service update`` has them."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from warren.cli.flags import change_ports, parse_publish
from warren.domain.errors import ValidationError


def test_plain_and_tls_ports() -> None:
    ports = parse_publish(["8080", "8443:8080/tls"], "c.pem", "k.pem")
    assert ports == [
        {"published": 8080},
        {"published": 8443, "target": 8080,
         "tls": {"cert": os.path.abspath("c.pem"), "key": os.path.abspath("k.pem")}},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "cert", "key", "words"),
    [
        (["8443/tls"], None, None, "needs --tls-cert FILE and --tls-key FILE"),
        (["8443/tls"], "c.pem", None, "needs --tls-cert FILE and --tls-key FILE"),
        (["8443/udp"], None, None, "expected PORT[:TARGET][/tls]"),
        (["web"], None, None, "expected PORT[:TARGET][/tls]"),
        (["8080"], "c.pem", "k.pem", "need a port published with /tls"),
    ],
)
def test_bad_publish_flags_are_one_clear_error(
    values: list[str], cert: str | None, key: str | None, words: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(words)) as err:
        parse_publish(values, cert, key)
    assert err.value.field == "--publish"


CURRENT: list[dict[str, Any]] = [{"published": 8080}, {"published": 9090, "target": 80}]


def test_publish_add_and_rm_change_only_the_ports_named() -> None:
    added = parse_publish(["8443:8080/tls"], "c.pem", "k.pem", "--publish-add")
    ports = change_ports(CURRENT, added, ["9090"])
    assert [p["published"] for p in ports] == [8080, 8443]
    # A port added on a number already published replaces it.
    assert change_ports(CURRENT, [{"published": 8080, "target": 81}], []) == [
        {"published": 9090, "target": 80},
        {"published": 8080, "target": 81},
    ]


def test_removing_a_port_not_published_is_refused() -> None:
    with pytest.raises(ValidationError, match="port 7000 is not published") as err:
        change_ports(CURRENT, [], ["7000"])
    assert err.value.field == "--publish-rm"
