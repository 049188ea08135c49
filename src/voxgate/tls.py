"""The TLS context every outbound HTTP client of a voxgate process verifies servers with.

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
