"""Node tokens: what a remote worker receives when it joins, and shows on every later call;
and the token the managers show a node to read its tasks' logs.

``wrn-node.NAME.MAC`` with MAC = HMAC-SHA256(cluster secret, NAME), or of ``NAME#EPOCH`` once
the node has been removed (``warren node rm``) EPOCH times: every manager checks it with the
cluster's secret (``/cluster/secret``) and the node's epoch (``/cluster/epochs/NAME``, absent
until a first removal), so a removed node's token stops working — it must join again — and a
token names the one node it may speak for.

Must not import anything of Warren's (a worker and an ingress check a token's form with it,
without loading the API)."""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = [
    "NODE_NAME",
    "NODE_NAME_PATTERN",
    "NODE_TOKEN_PREFIX",
    "claimed_node",
    "logs_token",
    "node_token",
    "valid",
]

NODE_TOKEN_PREFIX = "wrn-node."
NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""A node's name, as the OpenAPI document states it."""
NODE_NAME = re.compile(NODE_NAME_PATTERN[1:-1])
"""A node's name (``fullmatch``: no trailing newline slips through)."""


def _mac(secret: bytes, node: str) -> str:
    return hmac.new(secret, node.encode(), hashlib.sha256).hexdigest()


def logs_token(secret: bytes, node: str) -> str:
    """What a manager shows a node to read its tasks' logs (the node gets it when it joins)."""
    return f"wrn-logs.{_mac(secret, f'logs:{node}')}"


def _node_mac(secret: bytes, node: str, epoch: int) -> str:
    return _mac(secret, node if not epoch else f"{node}#{epoch}")


def node_token(secret: bytes, node: str, epoch: int = 0) -> str:
    return f"{NODE_TOKEN_PREFIX}{node}.{_node_mac(secret, node, epoch)}"


def claimed_node(token: str) -> str | None:
    """The node a token says it speaks for (not checked: see ``valid``), or None when it is
    no node token at all."""
    if not token.startswith(NODE_TOKEN_PREFIX):
        return None
    node = token[len(NODE_TOKEN_PREFIX) :].rpartition(".")[0]
    return node if NODE_NAME.fullmatch(node) else None


def valid(secret: bytes, token: str, node: str, epoch: int) -> bool:
    """Whether ``token`` is ``node``'s at its current ``epoch`` (compared in constant time)."""
    return hmac.compare_digest(token.encode(), node_token(secret, node, epoch).encode())
