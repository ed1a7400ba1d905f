"""HTTP/1.1 messages as the ingress reads and writes them: a request as parsed from its client
(``_Request``), the head to forward built from it in one pass (``_scan_headers``), the ingress's
own answers (``_text_response``), and the byte edits of a response head (``_value``,
``_drop_header``). No I/O: the connections (``downstream``, ``upstream``) use these.

Which headers are hop-by-hop, and what the ingress replaces, is decided here once, as sets and
markers searched in the head's bytes: a few ``find`` calls cost less than a Python call per
header.

Must not import control, agent, api or store: only ``ports``, ``domain``, the standard library,
httptools and uvloop.
"""

from __future__ import annotations

__all__ = [
    "_CLOSE",
    "_CONTINUE",
    "_KEEP_ALIVE",
    "_MAX_HEAD",
    "_RESPONSE_HOP_MARKERS",
    "_Request",
    "_Stop",
    "_drop_header",
    "_parser_error",
    "_scan_headers",
    "_text_response",
    "_value",
]

_MAX_HEAD = 64 * 1024
"""Largest response head (status line plus headers). A request's is bounded by ``Limits``."""

_REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}

# Request headers the ingress drops or replaces: hop-by-hop ones (RFC 9110 §7.6.1; an upgrade's
# are put back), the body framing (written again with the body: its Content-Length, or chunked),
# Expect (answered here) and X-Forwarded-*.
_REQUEST_SPECIAL = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"host",
    }
)

# Response headers the ingress drops: the connection-level ones, found by these markers in the
# lower-cased head. Transfer-Encoding and Trailer stay, because the body is forwarded as received
# (chunk framing included).
_RESPONSE_HOP_MARKERS = (
    b"\r\nconnection:",
    b"\r\nkeep-alive:",
    b"\r\nproxy-connection:",
    b"\r\nupgrade:",
)

# Connection tokens that name no header.
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})

_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Stop(Exception):
    """Raised from a parser callback to stop parsing a connection we are refusing."""


# ── one request, as parsed from the client ───────────────────────────────────────────────────────


class _Request:
    __slots__ = (
        "body",
        "body_size",
        "buffered",
        "chunked",
        "complete",
        "content_length",
        "done",
        "expect_continue",
        "forwarded_for",
        "has_body",
        "head",
        "head_only",
        "header_bytes",
        "headers",
        "headers_counted",
        "host",
        "keep_alive",
        "line_bytes",
        "method",
        "reject",
        "upgrade",
        "url",
        "version10",
    )

    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head = b""
        """What to send upstream before the body, serialized once: the request line, the headers
        to forward and the X-Forwarded-* ones; all but the Content-Length and the blank line."""
        self.host: bytes | None = None
        self.forwarded_for: bytes | None = None
        self.body: list[bytes] = []
        """Body bytes received and not yet sent upstream (they are sent as they come once the
        request is on an upstream connection)."""
        self.buffered = 0
        """Their total."""
        self.body_size = 0
        self.complete = False
        """The whole message is received."""
        self.done = False
        """Answered: what is left of its body is not wanted. (The request does not point to its
        exchange: that would make a reference cycle per request, left to the garbage collector.)"""
        self.content_length = -1
        self.chunked = False
        self.has_body = False
        self.expect_continue = False
        self.head_only = False
        self.keep_alive = True
        self.version10 = False
        self.reject: tuple[int, str] | None = None
        """Answer this request with that status and text, then close the connection."""
        self.upgrade: bytes | None = None
        """The protocol it asks to switch to (``Upgrade``), to be passed through."""
        self.line_bytes = -1
        """The bytes of the head's line not yet complete at the end of the last read; -1 while
        the head is in the read it began in."""
        self.header_bytes = 0
        """The bytes of the head's first ``headers_counted`` header lines."""
        self.headers_counted = 0


def _text_response(
    status: int, text: str, *, close: bool, version10: bool, head_only: bool
) -> bytes:
    body = text.encode("utf-8", "replace") + b"\n"
    if close:
        connection = _CLOSE
    elif version10:
        connection = _KEEP_ALIVE
    else:
        connection = b""
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n"
        % (
            status,
            _REASONS.get(status, b"Error"),
            len(body),
            connection,
        )
    )
    return head if head_only else head + body


# ── the head to forward, and the edits of a response head ───────────────────────────────────────


def _scan_headers(req: _Request, peer: bytes, proto: bytes = b"http") -> None:
    """Serialize the head to forward (``req.head``), and note the headers the ingress acts on.

    Built as a list of parts joined once: measured, ~35% cheaper than appending to a bytearray
    (350 ns for a one-header request)."""
    # An HTTP/1.0 client cannot read a chunked response: ask HTTP/1.0 upstream too.
    version = b" HTTP/1.0\r\nConnection: keep-alive\r\n" if req.version10 else b" HTTP/1.1\r\n"
    out = [req.method, b" ", req.url, version]
    connection: bytes | None = None
    for name, value in req.headers:
        lname = name.lower()
        if lname not in _REQUEST_SPECIAL:
            out += (name, b": ", value, b"\r\n")
        elif lname == b"host":
            req.host = value
            out += (name, b": ", value, b"\r\n")
        elif lname == b"content-length":
            req.has_body = True
            req.content_length = int(value)  # llhttp has checked it is a number
        elif lname == b"transfer-encoding":
            req.has_body = True
            req.chunked = value.lower().endswith(b"chunked")  # (llhttp refuses what is not)
        elif lname == b"x-forwarded-for":
            req.forwarded_for = (
                value if req.forwarded_for is None else req.forwarded_for + b", " + value
            )
        elif lname == b"expect":
            req.expect_continue = value.lower() == b"100-continue"
        elif lname == b"connection":
            connection = value if connection is None else connection + b"," + value
    if connection is not None:
        # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        named = {t.strip().lower() for t in connection.split(b",")} - _CONNECTION_OPTIONS
        if named:
            del out[4:]
            for name, value in req.headers:
                lname = name.lower()
                if lname not in named and (lname == b"host" or lname not in _REQUEST_SPECIAL):
                    out += (name, b": ", value, b"\r\n")
    xff = peer if req.forwarded_for is None else req.forwarded_for + b", " + peer
    out += (b"X-Forwarded-For: ", xff, b"\r\nX-Forwarded-Proto: ", proto, b"\r\n")
    if req.host is not None:
        out += (b"X-Forwarded-Host: ", req.host, b"\r\n")
    req.head = b"".join(out)
    # req.headers stay: a route's pins (preview, A/B) and sticky cookie read them when the
    # request is routed.


def _value(lower: bytes, marker: bytes) -> bytes:
    """The value of the header line that starts with ``marker`` (which ends with ``:``)."""
    start = lower.find(marker) + len(marker)
    return lower[start : lower.find(b"\r\n", start)].strip()


def _drop_header(head: bytes, lower: bytes, marker: bytes, i: int) -> tuple[bytes, bytes]:
    """Remove every header line that starts with ``marker`` from ``head`` (and from its
    lower-cased copy), the first found at ``i``. Both end with the CRLF of their last line, so
    each match has an end."""
    while i >= 0:
        j = lower.find(b"\r\n", i + 2)
        head = head[:i] + head[j:]
        lower = lower[:i] + lower[j:]
        i = lower.find(marker, i)
    return head, lower


def _parser_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
