"""What the ingress accepts from a client, and how long it waits on one: one record, read by the
proxy, filled from the ``--ingress-*`` flags of ``warren server`` and ``warren worker``.

The defaults are those of the common proxies: a request line of 8 KiB (nginx's
``large_client_header_buffers``, HAProxy's default buffer), 32 KiB and 100 fields of headers
(HAProxy's ``tune.http.maxhdr`` is 101), a request head within 10 s (HAProxy's usual
``timeout http-request``) and a keep-alive connection kept 75 s idle (nginx's
``keepalive_timeout``).

Must not import anything of Warren's: plain data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    head_timeout: float = 10.0
    """A request head (request line and headers) must arrive whole within this many seconds of
    its first byte — of the connection's opening for the first request. Otherwise: 408, then
    close (a connection that sent nothing is closed without a word). What holds slow clients
    that never finish a head (slowloris) to a bounded time."""
    idle_timeout: float = 75.0
    """A client connection with no request in progress is closed after this many seconds
    idle."""
    max_request_line: int = 8 * 1024
    """Longest request line (``GET /path?query HTTP/1.1``), in bytes; longer: 414."""
    max_header_bytes: int = 32 * 1024
    """Largest set of request header lines, in bytes (``Name: value`` and its CRLF each);
    larger: 431."""
    max_header_fields: int = 100
    """Most request header fields; more: 431."""
    max_body: int | None = None
    """Largest request body, in bytes; larger: 413. None: no limit (the body is streamed to the
    task as it comes, never held whole)."""
