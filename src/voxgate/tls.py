"""The TLS context every outbound HTTP client of a voxgate process verifies servers with, and how long
voxgate's own API clients keep an idle connection.

Building a context loads and parses the whole CA bundle (about 25 ms of CPU), and httpx builds a new
one for each client it makes; connectors, webhook deliveries and the command line's API client share
this one instead. It is httpx's own default (the `SSL_CERT_FILE` / `SSL_CERT_DIR` bundle when set,
else certifi's), made once per process on first use. An `ssl.SSLContext` is safe to share between
threads and clients.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_context() -> ssl.SSLContext:
    """The process's shared, verifying TLS client context (httpx's default trust store)."""
    return httpx.create_ssl_context()


#: how long the command line and the demo keep an idle connection to a worker: well under the shortest
#: keep-alive a worker can be set to (`http_keep_alive_s`, at least 1 s). At httpx's default (5 s, the
#: workers' default too) a request sent just as the worker closed the idle connection was lost mid-flight.
API_CLIENT_KEEPALIVE_S = 0.5


def api_client_limits() -> httpx.Limits:
    """Connection limits for a client of voxgate's own API (see API_CLIENT_KEEPALIVE_S)."""
    return httpx.Limits(keepalive_expiry=API_CLIENT_KEEPALIVE_S)
