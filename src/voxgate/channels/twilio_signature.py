"""Twilio's request signature: `X-Twilio-Signature` is the base64 of HMAC-SHA1 over the URL Twilio
requested (for a Media Streams handshake: the `wss://` URL of `<Stream url>`, with no body
parameters), keyed with the account's auth token."""

from __future__ import annotations

import base64
import hashlib
import hmac


def twilio_signature(auth_token: str, url: str) -> str:
    """The signature Twilio sends for a request to `url` that carries no body parameters."""
    digest = hmac.new(auth_token.encode("utf-8"), url.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_matches(auth_token: str, url: str, signature: str) -> bool:
    """Whether `signature` is Twilio's for `url` (compared in constant time)."""
    return hmac.compare_digest(
        twilio_signature(auth_token, url).encode("ascii"), signature.strip().encode("ascii", "replace")
    )
