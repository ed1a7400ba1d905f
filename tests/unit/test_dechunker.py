"""The ingress takes the chunked framing off a response for an HTTP/1.0 client, as the bytes
come, however they are split."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from warren.ingress.upstream import _Dechunker


def chunked(parts: list[bytes], trailers: bool) -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) if i % 2 else b"%X\r\n%s\r\n" % (len(p), p)
                   for i, p in enumerate(parts) if p)  # fmt: skip
    return out + (b"0\r\nX-Trailer: 1\r\n\r\n" if trailers else b"0\r\n\r\n")


@given(
    parts=st.lists(st.binary(max_size=300), max_size=8),
    trailers=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_the_body_comes_out_whole_however_the_bytes_are_split(
    parts: list[bytes], trailers: bool, cuts: list[int]
) -> None:
    stream = chunked(parts, trailers) + b"next"  # what follows the body is not the body's
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    dechunker = _Dechunker()
    out = b"".join(dechunker.feed(stream[a:b]) for a, b in pairwise(points))
    assert out == b"".join(parts)
