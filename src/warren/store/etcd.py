"""The etcd store: the StateStore API on an etcd 3.4+ cluster, for managers in high availability.

It speaks etcd's v3 gRPC API with the stubs that ``aetcd`` generates (``aetcd.rpc``) over
``grpc.aio``; no other module knows of either. On top of etcd it adds:

- **several endpoints**: it talks to one member at a time — the first that answers and knows a
  leader — and moves on to the next when that member is lost or has no leader;
- **a key prefix** (default ``/warren``) in front of every key, so that several clusters can share
  one etcd; above this module keys are Warren's (they all start with ``/``);
- **watches that survive a connection loss**: they resume on another member from the revision
  after the last one they delivered — no event lost, none twice;
- **errors in Warren's tree**: an unreachable etcd is an ``UnavailableError`` naming the endpoints,
  a compacted revision a ``CompactedError``; never a gRPC traceback;
- **TLS** (``etcds://``, ``EtcdTls``): etcd's certificate verified with a CA, and a client
  certificate presented to an etcd started with ``--client-cert-auth``; a handshake that fails says
  which side refused whom.

Where etcd differs from the memory and sqlite stores:

- Lease TTLs are whole seconds: ``grant(ttl)`` rounds up, minimum 1 (``grant(0.2)`` → 1 s), and
  etcd may raise a TTL to its own minimum (1.5 times its election timeout). Expiry runs on etcd's
  clock, in real time: the Clock handed to ``open_store`` plays no part.
- etcd rejects a txn that writes one key twice, so ops are folded to their net effect first: a
  later Put of a key replaces an earlier one (its version goes up once, not twice), a Delete drops
  the earlier Puts it covers, and a Put of a key that the same txn deleted is a ValidationError.
  etcd also caps the ops of one txn (``--max-txn-ops``, 128 by default).
- A ``value`` compare on an absent key is false whatever the op (the other stores compare ``b""``).
- A write whose outcome is unknown — the connection broke during the call, or etcd timed out —
  is not retried: it raises UnavailableError, and the level-triggered caller re-reads and
  retries. Reads, lease calls, and writes that certainly did not reach etcd are retried on the
  next member within ``timeout``.

Must not import anything of Warren's but ``domain`` and ``ports``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

# Before gRPC loads: its core writes log lines of its own straight to stderr, past Warren's
# logging (a refused client certificate: three lines per attempt, ten attempts a second), and
# every failure they tell of ends here in one error of ours. GRPC_VERBOSITY=ERROR shows them.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # type: ignore[import-untyped]
from aetcd import rpc  # type: ignore[import-untyped]

from ..domain.errors import (
    CompactedError,
    NotFoundError,
    StoreError,
    UnavailableError,
    ValidationError,
)
from ..ports import Compare, Delete, EventType, KeyValue, Op, Put, TxnResult, WatchEvent

__all__ = ["EtcdStore", "EtcdTls"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_METADATA: Final = (("hasleader", "true"),)
"""Sent with every call: a member that knows no leader refuses at once ("etcdserver: no leader")
instead of queueing a write it cannot commit — so such a refusal is always safe to retry."""

_CHANNEL_OPTIONS: Final = (
    ("grpc.max_receive_message_length", -1),  # ranges are paged, but one value may be large
    # Pings on open streams find a member that vanished without closing its sockets; etcd refuses
    # pings more often than every 5 s (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)
_PROBE_TIMEOUT: Final = 1.0
"""How long one member may take to answer the status probe before the next one is tried."""
_LOST_FOR: Final = 10.0
"""How long a member whose connection broke is not trusted as leader by the others. After a
leader dies, the followers still name it for about an election timeout; a write sent through one
of them then waits for etcd's request timeout (5 s + 2 election timeouts) and its outcome is
unknown. Waiting until they name a new leader (0.5 to 1.5 s measured) avoids that."""
_PAGE: Final = 1000
_RETRY_PAUSE: Final = 0.05
_WATCH_BACKOFF_MAX: Final = 1.0

_RESULTS: Final = {
    "==": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}
_TARGETS: Final = {
    "version": rpc.Compare.VERSION,
    "create_revision": rpc.Compare.CREATE,
    "mod_revision": rpc.Compare.MOD,
    "value": rpc.Compare.VALUE,
}


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """TLS to etcd, as PEM: the CA bundle that verifies the members (None: the system's CAs) and
    the certificate chain and key this client presents (both or neither)."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def load(cls, ca: str | None, cert: str | None, key: str | None) -> EtcdTls:
        """Read and check the files of ``--etcd-ca``, ``--etcd-cert`` and ``--etcd-key``: one
        that cannot be read, or does not hold what it should, is a ValidationError naming it —
        at start, not as a handshake that fails later for a reason gRPC words obscurely."""
        if bool(cert) != bool(key):
            raise ValidationError("give both --etcd-cert and --etcd-key, or neither")
        tls = cls(_read("--etcd-ca", ca), _read("--etcd-cert", cert), _read("--etcd-key", key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if ca:
            try:
                context.load_verify_locations(cafile=ca)
            except ssl.SSLError as exc:
                raise ValidationError(
                    f"--etcd-ca {ca} holds no PEM certificate ({exc.reason or exc})"
                ) from None
        if cert and key:
            try:
                context.load_cert_chain(cert, key)
            except ssl.SSLError as exc:
                raise ValidationError(
                    f"--etcd-cert {cert} and --etcd-key {key} are not a PEM certificate and "
                    f"its key ({exc.reason or exc})"
                ) from None
        return tls

    def credentials(self) -> Any:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _read(flag: str, path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValidationError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


@dataclass(eq=False)
class _Member:
    """One endpoint: its channel (made once, kept until close) and the stubs on it."""

    endpoint: str
    channel: Any
    kv: Any
    watch: Any
    lease: Any
    maintenance: Any
    member_id: int = 0


@dataclass(frozen=True, slots=True)
class _Fault:
    """A transient failure of one call. ``unsent``: etcd certainly did not run it (safe to retry
    even a write). ``lost``: the member itself is gone, not just busy or leaderless."""

    reason: str
    unsent: bool
    lost: bool


def _fault(exc: Any) -> _Fault | None:
    """Classify a gRPC error: a transient fault, or None for an answer to translate."""
    code = exc.code()
    details = str(exc.details() or "")
    if code == grpc.StatusCode.UNAVAILABLE:
        if "failed to connect" in details:  # no connection: the call never left this process
            return _Fault(_last_words(details), unsent=True, lost=True)
        if "no leader" in details:
            return _Fault("no leader", unsent=True, lost=False)
        if details.startswith("etcdserver:"):  # request timed out, leader changed, ...
            return _Fault(details.removeprefix("etcdserver: "), unsent=False, lost=False)
        return _Fault(f"connection lost ({_last_words(details)})", unsent=False, lost=True)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return _Fault("no answer in time", unsent=False, lost=False)
    if code == grpc.StatusCode.CANCELLED:
        return _Fault("call cancelled", unsent=False, lost=False)
    return None


def _last_words(details: str) -> str:
    """``failed to connect to all addresses; last error: …: Connection refused`` → the cause;
    a failed TLS handshake → who refused whom."""
    if "CERTIFICATE_VERIFY_FAILED" in details:
        why = details.partition("CERTIFICATE_VERIFY_FAILED:")[2].removesuffix(": OK").strip()
        return f"TLS: its certificate does not verify with the CA given ({why or 'refused'})"
    if "TSI_DATA_CORRUPTED" in details:
        # With TLS 1.3 the server checks the client's certificate after the client has finished
        # its handshake: its refusal arrives as an alert that gRPC reports as "Unwrap failed".
        return "TLS: it refused this client's certificate, or wants one"
    if "handshake failed" in details.lower():
        why = details.partition("SSL_ERROR_SSL:")[2].removesuffix(": OK").strip()
        return f"TLS handshake failed ({why or _tail(details)})"
    return _tail(details)


def _tail(details: str) -> str:
    return details.rsplit(": ", 1)[-1].strip() or "unreachable"


def _range_end(start: bytes) -> bytes:
    """The end of etcd's key range for a prefix: the prefix with its last byte plus one."""
    end = bytearray(start)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"  # every key from start on


def _covers(op: Delete, key: str) -> bool:
    return op.key == key or (op.prefix and key.startswith(op.key))


def _fold(ops: Sequence[Op]) -> list[Op]:
    """The net effect of ``ops`` with each key written at most once (etcd's rule for a txn).

    [Put a, Put b, Delete a] → [Put b, Delete a]; [Put a=1, Put a=2] → [Put a=2].
    """
    folded: list[Op] = []
    for op in ops:
        if isinstance(op, Put):
            if any(isinstance(o, Delete) and _covers(o, op.key) for o in folded):
                raise ValidationError(
                    f"the etcd store cannot put {op.key} after deleting it in the same txn", "txn"
                )
            folded = [o for o in folded if not (isinstance(o, Put) and o.key == op.key)]
        else:
            folded = [o for o in folded if not (isinstance(o, Put) and _covers(op, o.key))]
        folded.append(op)
    return folded


async def _requests(create: Any, ended: asyncio.Event) -> AsyncIterator[Any]:
    """A watch stream's request side: the create request, then open until the watch ends.
    (gRPC's write() can hang for good when the call is cancelled before it starts.)"""
    yield rpc.WatchRequest(create_request=create)
    await ended.wait()


def _cancelled_by_close(store: EtcdStore) -> bool:
    """A gRPC call cancelled under us by close() raises CancelledError in a task that nobody
    cancelled; a real cancellation of the task must propagate."""
    task = asyncio.current_task()
    return store.closed and (task is None or task.cancelling() == 0)


class EtcdStore:
    """The StateStore API on etcd. ``endpoints`` are ``HOST:PORT`` of the cluster's members, in
    the order to try them; ``prefix`` is put in front of every key; ``timeout`` bounds each call,
    retries and failover included. Connects on first use; ``from_url`` reads ``--store``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/warren",
        timeout: float = 5.0,
        tls: EtcdTls | None = None,
    ) -> None:
        if not endpoints:
            raise ValidationError("name at least one etcd endpoint HOST:PORT", "--store")
        for endpoint in endpoints:
            host, _, port = endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise ValidationError(f"{endpoint!r} is not HOST:PORT", "--store")
        if prefix and not prefix.startswith("/"):
            raise ValidationError(f"{prefix!r} must start with '/'", "prefix")
        self.endpoints = tuple(endpoints)
        self.prefix = prefix.rstrip("/")
        self._prefix = self.prefix.encode()
        self._timeout = timeout
        self._tls = tls
        self._members: dict[str, _Member] = {}
        self._current: _Member | None = None
        self._next = 0  # index of the endpoint to try first
        self._lost: dict[int, float] = {}  # member id → loop time its connection broke
        self._connecting = asyncio.Lock()
        self._streams: set[Any] = set()  # open stream calls, cancelled by close()
        self._revision = 0
        self._closed = False

    @classmethod
    def from_url(cls, url: str, timeout: float = 5.0, tls: EtcdTls | None = None) -> EtcdStore:
        """``etcd://HOST:PORT[,HOST:PORT…][/PREFIX]``, e.g. ``etcd://10.0.0.1:2379,10.0.0.2:2379``
        or ``etcd://127.0.0.1:2379/warren-staging`` (the prefix defaults to ``/warren``);
        ``etcds://…`` the same over TLS (``tls``, or the system's CAs and no client certificate
        when None)."""
        secure = url.startswith("etcds://")
        rest = url.removeprefix("etcds://" if secure else "etcd://")
        hosts, slash, path = rest.partition("/")
        endpoints = [h.strip() for h in hosts.split(",") if h.strip()]
        if secure and tls is None:
            tls = EtcdTls()
        elif not secure and tls is not None:
            raise ValidationError("TLS to etcd needs an etcds:// store", "--store")
        prefix = f"/{path}" if slash and path else "/warren"
        return cls(endpoints, prefix=prefix, timeout=timeout, tls=tls)

    @property
    def revision(self) -> int:
        """The newest store revision this client has seen in an answer (0 before the first)."""
        return self._revision

    @property
    def closed(self) -> bool:
        return self._closed

    # ── keys ─────────────────────────────────────────────────────────────────────────────────

    def _key(self, key: str, prefix: bool = False) -> bytes:
        if not key.startswith("/"):
            if not (prefix and key == ""):
                raise ValidationError(f"{key!r}: store keys start with '/'", "key")
            key = "/"  # every key starts with "/": the empty prefix is the same range
        return self._prefix + key.encode()

    def _kv(self, kv: Any) -> KeyValue:
        return KeyValue(
            key=bytes(kv.key)[len(self._prefix) :].decode(),
            value=bytes(kv.value),
            create_revision=int(kv.create_revision),
            mod_revision=int(kv.mod_revision),
            version=int(kv.version),
            lease=int(kv.lease),
        )

    def _seen(self, header: Any) -> int:
        revision = int(header.revision)
        self._revision = max(self._revision, revision)
        return revision

    # ── reads ────────────────────────────────────────────────────────────────────────────────

    async def get(self, key: str) -> KeyValue | None:
        request = rpc.RangeRequest(key=self._key(key))

        async def attempt(member: _Member, deadline: float) -> KeyValue | None:
            resp = await member.kv.Range(request, timeout=self._left(deadline), metadata=_METADATA)
            self._seen(resp.header)
            return self._kv(resp.kvs[0]) if resp.kvs else None

        return await self._call(f"get {key}", attempt, idempotent=True)

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        start = self._key(prefix, prefix=True)
        end = _range_end(start)

        async def attempt(member: _Member, deadline: float) -> tuple[list[KeyValue], int]:
            # Pages of _PAGE keys, all read at the revision of the first page.
            kvs: list[KeyValue] = []
            key, revision = start, 0
            while True:
                request = rpc.RangeRequest(key=key, range_end=end, limit=_PAGE, revision=revision)
                try:
                    resp = await member.kv.Range(
                        request, timeout=self._left(deadline), metadata=_METADATA
                    )
                except grpc.aio.AioRpcError as exc:
                    if revision and exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                        kvs, key, revision = [], start, 0  # compacted between pages: start over
                        continue
                    raise
                self._seen(resp.header)
                revision = revision or int(resp.header.revision)
                kvs.extend(self._kv(kv) for kv in resp.kvs)
                if not resp.more or not resp.kvs:
                    return kvs, revision
                key = bytes(resp.kvs[-1].key) + b"\0"

        return await self._call(f"range {prefix}", attempt, idempotent=True)

    # ── writes ───────────────────────────────────────────────────────────────────────────────

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        request = rpc.PutRequest(key=self._key(key), value=value, lease=lease)

        async def attempt(member: _Member, deadline: float) -> int:
            resp = await member.kv.Put(request, timeout=self._left(deadline), metadata=_METADATA)
            return self._seen(resp.header)

        return await self._call(f"put {key}", attempt, idempotent=False)

    async def delete(self, key: str, prefix: bool = False) -> int:
        start = self._key(key, prefix=prefix)
        request = rpc.DeleteRangeRequest(key=start, range_end=_range_end(start) if prefix else b"")

        async def attempt(member: _Member, deadline: float) -> int:
            resp = await member.kv.DeleteRange(
                request, timeout=self._left(deadline), metadata=_METADATA
            )
            return self._seen(resp.header)

        return await self._call(f"delete {key}", attempt, idempotent=False)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        request = rpc.TxnRequest(
            compare=[self._compare(c) for c in compares],
            success=[self._op(op) for op in _fold(success)],
            failure=[self._op(op) for op in _fold(failure)],
        )

        async def attempt(member: _Member, deadline: float) -> TxnResult:
            resp = await member.kv.Txn(request, timeout=self._left(deadline), metadata=_METADATA)
            return TxnResult(bool(resp.succeeded), self._seen(resp.header))

        return await self._call("txn", attempt, idempotent=not (success or failure))

    def _compare(self, c: Compare) -> Any:
        if isinstance(c.value, bytes) != (c.target == "value"):
            raise ValidationError(f"compare of {c.target} needs a matching value type", "compare")
        return rpc.Compare(
            key=self._key(c.key),
            result=_RESULTS[c.op],
            target=_TARGETS[c.target],
            **{c.target: c.value},  # the proto's fields are named like Warren's targets
        )

    def _op(self, op: Op) -> Any:
        if isinstance(op, Put):
            return rpc.RequestOp(
                request_put=rpc.PutRequest(key=self._key(op.key), value=op.value, lease=op.lease)
            )
        start = self._key(op.key, prefix=op.prefix)
        end = _range_end(start) if op.prefix else b""
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=start, range_end=end))

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision`` from the whole etcd (every prefix on it): watches
        from older revisions then raise CompactedError. etcd's ``--auto-compaction-retention``
        is the usual way; this is for operators and tests. Compacting twice is harmless."""
        request = rpc.CompactionRequest(revision=revision)

        async def attempt(member: _Member, deadline: float) -> None:
            try:
                await member.kv.Compact(request, timeout=self._left(deadline), metadata=_METADATA)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.OUT_OF_RANGE or "compacted" not in exc.details():
                    raise

        await self._call(f"compact to {revision}", attempt, idempotent=True)

    # ── watches ──────────────────────────────────────────────────────────────────────────────

    async def watch(self, prefix: str, from_revision: int) -> AsyncIterator[list[WatchEvent]]:
        """Once its first stream is open, a watch outlives outages of any length: it reconnects
        (backing off up to 1 s) and resumes after the last revision it delivered. It raises
        UnavailableError only when no member answers within ``timeout`` at the start."""
        start = self._key(prefix, prefix=True)
        end = _range_end(start)
        next_revision = max(1, from_revision)  # etcd reads 0 as "from now": not what we mean
        loop = asyncio.get_running_loop()
        established = False  # once a stream is open, outages only delay the watch
        give_up = loop.time() + self._timeout  # ... until then, this bounds the attempts
        pause = _RETRY_PAUSE
        while not self._closed:
            try:
                member = await self._connect(loop.time() + self._timeout)
            except UnavailableError:
                if self._closed:
                    return
                if not established:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, _WATCH_BACKOFF_MAX)
                continue
            create = rpc.WatchCreateRequest(
                key=start, range_end=end, start_revision=next_revision, prev_kv=True
            )
            ended = asyncio.Event()
            call = member.watch.Watch(_requests(create, ended), metadata=_METADATA)
            self._streams.add(call)
            try:
                while True:
                    resp = await call.read()
                    if resp is grpc.aio.EOF:  # the member ended the stream: go on elsewhere
                        self._leave(member, lost=False)
                        break
                    self._seen(resp.header)
                    if resp.compact_revision:
                        raise CompactedError(
                            f"revision {next_revision} is compacted "
                            f"(oldest kept: {resp.compact_revision})"
                        )
                    if resp.canceled:
                        log.info(
                            "etcd at %s ended a watch: %s", member.endpoint, resp.cancel_reason
                        )
                        self._leave(member, lost=False)
                        break
                    if resp.created:
                        established, pause = True, _RETRY_PAUSE
                    for batch in self._batches(resp.events):
                        yield batch
                        next_revision = batch[0].kv.mod_revision + 1
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    return
                fault = _fault(exc)
                if fault is None:
                    raise self._translate(exc, f"watch {prefix}", member) from exc
                self._leave(member, lost=fault.lost)
                if not established and loop.time() >= give_up:
                    raise UnavailableError(
                        f"etcd at {member.endpoint} did not open a watch on {prefix}: "
                        f"{fault.reason}"
                    ) from exc
                log.warning(
                    "watch on %s lost etcd at %s (%s); resuming from revision %d",
                    prefix, member.endpoint, fault.reason, next_revision,
                )  # fmt: skip
            except asyncio.CancelledError:
                if _cancelled_by_close(self):
                    return
                raise
            finally:
                ended.set()
                self._streams.discard(call)
                call.cancel()
            await asyncio.sleep(_RETRY_PAUSE)  # no busy loop when a member keeps failing

    def _batches(self, events: Sequence[Any]) -> list[list[WatchEvent]]:
        """One response can hold several revisions (never part of one): one batch each."""
        batches: list[list[WatchEvent]] = []
        for e in events:
            event = self._event(e)
            if batches and batches[-1][0].kv.mod_revision == event.kv.mod_revision:
                batches[-1].append(event)
            else:
                batches.append([event])
        return batches

    def _event(self, e: Any) -> WatchEvent:
        if e.type == rpc.Event.DELETE:
            key = bytes(e.kv.key)[len(self._prefix) :].decode()
            tomb = KeyValue(key, b"", 0, int(e.kv.mod_revision), 0, 0)
            prev = self._kv(e.prev_kv) if e.HasField("prev_kv") else None
            return WatchEvent(EventType.DELETE, tomb, prev)
        return WatchEvent(EventType.PUT, self._kv(e.kv))  # no prev: as the other stores

    # ── leases ───────────────────────────────────────────────────────────────────────────────

    async def grant(self, ttl: float) -> int:
        """A lease of ``ttl`` seconds rounded up to whole seconds, at least 1 (etcd's unit)."""
        if ttl <= 0:
            raise ValidationError("must be > 0", "ttl")
        request = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)), ID=0)

        async def attempt(member: _Member, deadline: float) -> int:
            resp = await member.lease.LeaseGrant(
                request, timeout=self._left(deadline), metadata=_METADATA
            )
            self._seen(resp.header)
            if resp.error:
                raise StoreError(f"etcd at {member.endpoint} refused a lease: {resp.error}")
            return int(resp.ID)

        # Retrying a grant whose answer was lost leaks at most a lease that nobody keeps alive.
        return await self._call("grant a lease", attempt, idempotent=True)

    async def keepalive(self, lease: int) -> None:
        async def attempt(member: _Member, deadline: float) -> int:
            # One request, then the client's end of the stream: etcd answers it, then ends.
            call = member.lease.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease)]),
                timeout=self._left(deadline),
                metadata=_METADATA,
            )
            try:
                resp = await call.read()
            finally:
                call.cancel()
            if resp is grpc.aio.EOF:
                raise UnavailableError(f"etcd at {member.endpoint} ended a lease keepalive")
            self._seen(resp.header)
            return int(resp.TTL)

        if await self._call(f"keep lease {lease} alive", attempt, idempotent=True) <= 0:
            raise NotFoundError(f"lease {lease} not found (expired or revoked)")

    async def revoke(self, lease: int) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease)

        async def attempt(member: _Member, deadline: float) -> None:
            try:
                resp = await member.lease.LeaseRevoke(
                    request, timeout=self._left(deadline), metadata=_METADATA
                )
                self._seen(resp.header)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # already gone: as asked
                    raise

        await self._call(f"revoke lease {lease}", attempt, idempotent=True)

    # ── calls, failover and errors ───────────────────────────────────────────────────────────

    def _left(self, deadline: float) -> float:
        return max(0.001, deadline - asyncio.get_running_loop().time())

    async def _call(
        self,
        what: str,
        attempt: Callable[[_Member, float], Awaitable[T]],
        *,
        idempotent: bool,
    ) -> T:
        """Run ``attempt`` on the current member, moving to the next member on a transient fault
        while ``timeout`` lasts — unless it was a write that etcd may have run."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        while True:
            member = await self._connect(deadline)
            try:
                return await attempt(member, deadline)
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise UnavailableError("the store is closed") from exc
                fault = _fault(exc)
                if fault is None:
                    raise self._translate(exc, what, member) from exc
                self._leave(member, lost=fault.lost)
                if not (fault.unsent or idempotent):
                    raise UnavailableError(
                        f"etcd at {member.endpoint} did not confirm {what} ({fault.reason}): "
                        "it may or may not have been applied"
                    ) from exc
                if loop.time() + _RETRY_PAUSE >= deadline:
                    raise UnavailableError(
                        f"etcd did not answer {what} within {self._timeout:g}s "
                        f"(last: {member.endpoint}: {fault.reason})"
                    ) from exc
                await asyncio.sleep(_RETRY_PAUSE)
            except grpc.aio.UsageError as exc:  # the channel was closed by close()
                raise UnavailableError("the store is closed") from exc
            except asyncio.CancelledError:
                if _cancelled_by_close(self):
                    raise UnavailableError("the store is closed") from None
                raise

    def _translate(self, exc: Any, what: str, member: _Member) -> Exception:
        code = exc.code()
        details = str(exc.details() or "").removeprefix("etcdserver: ")
        if code == grpc.StatusCode.NOT_FOUND:
            if "lease not found" in details:
                return NotFoundError(f"{what}: lease not found (expired or revoked)")
            return NotFoundError(f"{what}: {details}")
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            return CompactedError(f"{what}: {details}")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return ValidationError(f"etcd refused {what}: {details}")
        return StoreError(f"etcd at {member.endpoint} failed {what}: {details}")

    async def _connect(self, deadline: float) -> _Member:
        """The member to talk to: the current one, or the first (from the one after the last
        lost) that answers and names a leader that is not known to be lost."""
        if self._closed:
            raise UnavailableError("the store is closed")
        if self._current is not None:
            return self._current
        try:
            # _scan gives up by itself at the deadline, with the reasons; this bounds the wait
            # for another caller's scan.
            async with asyncio.timeout_at(deadline + _PROBE_TIMEOUT):
                async with self._connecting:  # one scan at a time; the others take its result
                    return await self._scan(deadline)
        except TimeoutError:
            raise UnavailableError(
                f"etcd is unreachable at {', '.join(self.endpoints)} "
                f"(no member answered within {self._timeout:g}s)"
            ) from None

    async def _scan(self, deadline: float) -> _Member:
        loop = asyncio.get_running_loop()
        count = len(self.endpoints)
        while True:
            if self._closed:
                raise UnavailableError("the store is closed")
            if self._current is not None:
                return self._current
            problems: list[str] = []
            for i in range(count):
                index = (self._next + i) % count
                member = self._member(self.endpoints[index])
                timeout = min(_PROBE_TIMEOUT, self._left(deadline))
                try:
                    status = await member.maintenance.Status(
                        rpc.StatusRequest(), timeout=timeout, metadata=_METADATA
                    )
                except grpc.aio.AioRpcError as exc:
                    fault = _fault(exc)
                    reason = fault.reason if fault else str(exc.details())
                    if self._tls is None and reason == "Socket closed":  # what TLS etcds answer
                        reason += " (if etcd serves TLS: --store etcds://)"
                    problems.append(f"{member.endpoint}: {reason}")
                    continue
                self._seen(status.header)
                member.member_id = int(status.header.member_id)
                self._lost.pop(member.member_id, None)  # it answers: it is alive
                leader = int(status.leader)
                if leader == 0 or self._is_lost(leader, loop.time()):
                    problems.append(f"{member.endpoint}: no leader")
                    continue
                self._current, self._next = member, index
                return member
            if loop.time() + _RETRY_PAUSE >= deadline:
                raise UnavailableError(
                    f"etcd is unreachable at {', '.join(self.endpoints)} ({'; '.join(problems)})"
                )
            await asyncio.sleep(_RETRY_PAUSE)

    def _is_lost(self, member_id: int, now: float) -> bool:
        lost_at = self._lost.get(member_id)
        return lost_at is not None and now - lost_at < _LOST_FOR

    def _leave(self, member: _Member, lost: bool) -> None:
        """Stop using ``member``; the next call starts from the endpoint after it."""
        if lost and member.member_id:
            self._lost[member.member_id] = asyncio.get_running_loop().time()
        if self._current is member:
            self._current = None
            self._next = (self.endpoints.index(member.endpoint) + 1) % len(self.endpoints)

    def _member(self, endpoint: str) -> _Member:
        member = self._members.get(endpoint)
        if member is None:
            if self._tls is None:
                channel = grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.aio.secure_channel(
                    endpoint, self._tls.credentials(), options=_CHANNEL_OPTIONS
                )
            member = _Member(
                endpoint,
                channel,
                kv=rpc.KVStub(channel),
                watch=rpc.WatchStub(channel),
                lease=rpc.LeaseStub(channel),
                maintenance=rpc.MaintenanceStub(channel),
            )
            self._members[endpoint] = member
        return member

    # ── life cycle ───────────────────────────────────────────────────────────────────────────

    async def close(self) -> None:
        """End every watch (their iterators stop) and close the connections."""
        if self._closed:
            return
        self._closed = True
        self._current = None
        for call in list(self._streams):
            call.cancel()
        for member in self._members.values():
            with contextlib.suppress(Exception):
                await member.channel.close()
