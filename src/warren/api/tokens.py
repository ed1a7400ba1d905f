"""Node tokens: what a remote worker receives when it joins, and shows on every later call;
and the token the managers show a node to read its tasks' logs.

``wrn-node.NAME.MAC`` with MAC = HMAC-SHA256(cluster secret, NAME): every manager checks it with
the cluster's secret (``/cluster/secret``), nothing per node is stored, and a token names the one
node it may speak for."""

from __future__ import annotations

import hashlib
import hmac
import re

__all__ = ["NODE_NAME", "NODE_TOKEN_PREFIX", "logs_token", "node_of", "node_token"]

NODE_TOKEN_PREFIX = "wrn-node."
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
"""A node's name (``fullmatch``: no trailing newline slips through)."""


def _mac(secret: bytes, node: str) -> str:
    return hmac.new(secret, node.encode(), hashlib.sha256).hexdigest()


def logs_token(secret: bytes, node: str) -> str:
    """What a manager shows a node to read its tasks' logs (the node gets it when it joins)."""
    return f"wrn-logs.{_mac(secret, f'logs:{node}')}"


def node_token(secret: bytes, node: str) -> str:
    return f"{NODE_TOKEN_PREFIX}{node}.{_mac(secret, node)}"


def node_of(secret: bytes, token: str) -> str | None:
    """The node ``token`` speaks for, or None when it is not a valid node token."""
    if not token.startswith(NODE_TOKEN_PREFIX):
        return None
    node, _, mac = token[len(NODE_TOKEN_PREFIX) :].rpartition(".")
    if not NODE_NAME.fullmatch(node):
        return None
    return node if hmac.compare_digest(mac.encode(), _mac(secret, node).encode()) else None
