"""One HTTP client for the tests' requests to the servers they start on loopback.

Every new httpx client (and so every bare ``httpx.get``) builds a TLS context from the whole CA bundle,
about 25 ms of CPU; polling loops that wait for a worker pay that several times a second. The requests
here are plain HTTP to 127.0.0.1, so one pooled client without TLS verification serves them all.
"""

from __future__ import annotations

from typing import Any

import httpx

_client = httpx.Client(trust_env=False, verify=False)


def get(url: str, **kwargs: Any) -> httpx.Response:
    """GET `url` (an http://127.0.0.1 address) with the shared client."""
    if not url.startswith("http://127.0.0.1"):
        raise ValueError(f"the loopback client is for plain HTTP on 127.0.0.1, not {url}")
    return _client.get(url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    """POST to `url` (an http://127.0.0.1 address) with the shared client."""
    if not url.startswith("http://127.0.0.1"):
        raise ValueError(f"the loopback client is for plain HTTP on 127.0.0.1, not {url}")
    return _client.post(url, **kwargs)
