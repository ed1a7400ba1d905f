"""The ingress reads the common response (whole in one read, its end told by its Content-Length)
without llhttp: whenever it does, llhttp would have read the same status, the same end and the
same keep-alive (or refused a CR standing alone, which the ingress forwards: a recipient must
refuse it or read it as a space); and what it does not read that way, llhttp still does."""

from __future__ import annotations

import re

import httptools
from hypothesis import given
from hypothesis import strategies as st

from warren.ingress.messages import _ResponseHead

NAMES = [
    b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Connection", b"connection",
    b"Transfer-Encoding", b"Content-Type", b"Server", b"Keep-Alive", b"Upgrade",
    b"Proxy-Connection", b"Date", b"X-Content-Lengthy", b"Content-Lengt",
]  # fmt: skip


class _Parsed:
    """What the ingress asks llhttp, when it asks (``_Upstream.on_headers_complete``)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.complete = 0
        self.status = 0
        self.keep = False

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self.complete += 1


def llhttp(buf: bytes) -> tuple[int, bool, int] | None:
    """(status, keep-alive, messages completed) as llhttp reads ``buf``; None if it refuses."""
    parsed = _Parsed()
    try:
        parsed.parser.feed_data(buf)
    except httptools.HttpParserError:
        return None
    return parsed.status, parsed.keep, parsed.complete


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500, 503, 101, 100]))
    body = draw(st.binary(max_size=40))
    headers = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(NAMES))
        value = draw(
            st.one_of(
                st.sampled_from([b"keep-alive", b"close", b"chunked", b"Keep-Alive", b"x"]),
                st.integers(0, 60).map(lambda n: b"%d" % n),
                st.just(b"%d" % len(body)),
            )
        )
        space = draw(st.sampled_from([b" ", b"", b"  "]))
        headers.append(name + b":" + space + value)
    if draw(st.booleans()):
        # Mostly the common response: one Content-Length that fits, a Connection perhaps.
        headers = [h for h in headers if not h.lower().startswith((b"content-length", b"conn"))]
        headers.insert(draw(st.integers(0, len(headers))), b"Content-Length: %d" % len(body))
        if draw(st.booleans()):
            token = draw(st.sampled_from([b"keep-alive", b"close", b"Keep-Alive", b"CLOSE"]))
            headers.append(draw(st.sampled_from([b"Connection: ", b"connection:"])) + token)
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    head = b"%s %d OK\r\n" % (version, status) + b"".join(h + b"\r\n" for h in headers)
    out = head + b"\r\n" + body
    if draw(st.integers(0, 3)) == 0:
        # A defect somewhere: a bare LF or CR, a line without a colon, a space in a name.
        at = draw(st.integers(0, len(out)))
        out = (
            out[:at] + draw(st.sampled_from([b"\n", b"\r", b"\r\nbad\r\n", b"X :1\r\n"])) + out[at:]
        )
    return out


@given(responses())
def test_what_is_read_without_llhttp_is_what_llhttp_reads(buf: bytes) -> None:
    head = _ResponseHead.whole(buf, head_only=False)
    if head is None:
        return
    read = llhttp(buf)
    if read is None:
        assert re.search(rb"\r(?!\n)", buf[: head.end])
    else:
        assert read == (head.status, head.keep, 1)
    # Nothing of the head is lost but the connection-level headers.
    kept = b"\n".join(head.kept)
    assert b"connection:" not in kept.lower()
    assert kept == re.sub(rb"(?im)^connection:[^\n]*\n", b"", buf[: head.end])


def test_the_common_response_is_read_without_llhttp() -> None:
    buf = (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\n"
        b"Content-Length: 17\r\nConnection: keep-alive\r\n\r\n" + b'{"version": "v1"}'
    )
    head = _ResponseHead.whole(buf, head_only=False)
    assert head is not None and (head.status, head.keep) == (200, True)
    assert head.kept[1:] == [b"Server: nginx\r", b"Content-Type: application/json\r",
                             b"Content-Length: 17\r", b""]  # fmt: skip
    assert _ResponseHead.whole(buf.replace(b"keep-alive", b"close"), head_only=False).keep is False  # type: ignore[union-attr]
    for other in (
        buf.replace(b"17", b"16"),  # the length does not match: llhttp reads it
        buf.replace(b"HTTP/1.1", b"HTTP/1.0"),
        buf.replace(b"Content-Length: 17", b"Transfer-Encoding: chunked"),
        buf + b"HTTP/1.1 200 OK\r\n",  # more than one response
        buf[:-3],  # not whole
    ):
        assert _ResponseHead.whole(other, head_only=False) is None
    assert _ResponseHead.whole(buf, head_only=True) is None
