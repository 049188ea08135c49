"""The HTTP client every `voxgate` command that talks to a running server uses.

It decides which server and API token a command uses, and turns every failure to reach or
use that server into one line on stderr (exit 1), never a traceback.

Which server and token, first found wins, each read when the command runs:

1. the environment variables `VOXGATE_URL` and `VOXGATE_TOKEN` (each one overrides its field);
2. the credentials file `voxgate login` writes: `VOXGATE_CREDENTIALS`, by default
   `~/.config/voxgate/credentials.json`;
3. the demo profile `voxgate demo` writes: `<data_dir>/demo-profile.json` (data_dir from the
   settings, `VOXGATE_DATA_DIR`, default `var`).

Both files hold one JSON object: `{"url": "http://127.0.0.1:8600", "token": "vxg_…",
"username": "admin"}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from voxgate.cli import _common
from voxgate.tls import api_client_limits, client_context

if TYPE_CHECKING:
    import httpx

DEFAULT_CREDENTIALS = "~/.config/voxgate/credentials.json"
DEMO_PROFILE = "demo-profile.json"
CSRF_HEADER = "X-Voxgate-CSRF"
TIMEOUT_S = 60.0
EXAMPLE_URL = "http://127.0.0.1:8600"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and leave with `code`: 1 by default, as a server could not be reached or used."""
    _common.fail(message, code)


# ---- which server, which token -----------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A server, the API token to use with it, and where each came from (for error messages)."""

    url: str
    token: str
    username: str | None = None
    url_source: str = ""
    token_source: str = ""


def credentials_path() -> Path:
    """The file `voxgate login` writes (VOXGATE_CREDENTIALS, else ~/.config/voxgate/credentials.json)."""
    return Path(os.environ.get("VOXGATE_CREDENTIALS") or DEFAULT_CREDENTIALS).expanduser()


def demo_profile_path() -> Path | None:
    """`<data_dir>/demo-profile.json`, the profile `voxgate demo` writes; None if the settings cannot be read."""
    from voxgate.config import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError:
        return None
    return Path(settings.data_dir) / DEMO_PROFILE


def _read_profile_file(path: Path) -> dict[str, str] | None:
    """The url/token/username of a saved profile, None if the file does not exist."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    try:
        data = json.loads(text)
    except ValueError:
        fail(f"{path} is not valid JSON: run `voxgate login --url URL` to write it again")
    if not isinstance(data, dict):
        fail(f"{path} does not hold a JSON object: run `voxgate login --url URL` to write it again")
    return {k: str(v) for k, v in data.items() if k in ("url", "token", "username") and v}


def saved_token() -> str | None:
    """The API token a command would use (same order as resolve_profile), or None; never fails."""
    token = os.environ.get("VOXGATE_TOKEN", "").strip()
    if token:
        return token
    for path in (credentials_path(), demo_profile_path()):
        if path is None:
            continue
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("token"), str) and data["token"]:
            return str(data["token"])
    return None


def resolve_profile() -> Profile:
    """The server and token a command uses: environment, then the credentials file, then the demo profile."""
    env_url = os.environ.get("VOXGATE_URL", "").strip()
    env_token = os.environ.get("VOXGATE_TOKEN", "").strip()
    saved: dict[str, str] = {}
    saved_from = ""
    if not (env_url and env_token):
        candidates = [credentials_path()]
        demo = demo_profile_path()
        if demo is not None:
            candidates.append(demo)
        for path in candidates:
            data = _read_profile_file(path)
            if data and data.get("url") and data.get("token"):
                saved, saved_from = data, str(path)
                break
    url = env_url or saved.get("url", "")
    token = env_token or saved.get("token", "")
    if not url or not token:
        missing = "no server" if not url else "no API token"
        fail(
            f"{missing} to talk to: run `voxgate login --url URL` (or start `voxgate demo`), "
            "or set VOXGATE_URL and VOXGATE_TOKEN"
        )
    return Profile(
        url=check_url(url, source="VOXGATE_URL" if env_url else saved_from),
        token=token,
        username=None if env_token else saved.get("username"),
        url_source="VOXGATE_URL" if env_url else saved_from,
        token_source="VOXGATE_TOKEN" if env_token else saved_from,
    )


def check_url(url: str, source: str = "") -> str:
    """`url` without a trailing slash if it is an http(s) URL with a host; otherwise one clear line and exit 1."""
    where = f" (from {source})" if source else ""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        fail(f"'{url}'{where} is not a valid server URL: expected something like {EXAMPLE_URL}")
    if "://" not in text:
        fail(f"'{url}'{where} has no scheme: use http://{text} (or https://)")
    if parts.scheme not in ("http", "https"):
        fail(f"'{url}'{where} is not an http:// or https:// URL: voxgate servers answer on e.g. {EXAMPLE_URL}")
    if not parts.hostname:
        fail(f"'{url}'{where} names no host: expected something like {EXAMPLE_URL}")
    return text.rstrip("/")


# ---- talking to the server ---------------------------------------------------------------------------


def _root_cause(exc: BaseException) -> BaseException:
    seen = exc
    while True:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            return seen
        seen = nxt


@contextlib.contextmanager
def server_errors(url: str, source: str = "") -> Iterator[None]:
    """Turn every httpx failure to reach `url` into one line on stderr and exit 1.

    `source` says where the URL came from (VOXGATE_URL, a file), named in the message.
    """
    import httpx

    where = f" (from {source})" if source else ""
    try:
        yield
    except httpx.TimeoutException:
        fail(f"{url}{where} did not answer in time: is the server overloaded, or is this the right address?")
    except httpx.ConnectError as exc:
        cause = _root_cause(exc)
        host = urlsplit(url).hostname or url
        if isinstance(cause, socket.gaierror):
            fail(f"cannot reach {url}{where}: the host name '{host}' does not resolve; check the URL")
        if isinstance(cause, ssl.SSLError):
            fail(
                f"cannot connect to {url}{where}: the TLS handshake failed ({cause.reason or cause}); "
                "if the server speaks plain HTTP, use http://"
            )
        if isinstance(cause, ConnectionRefusedError):
            fail(
                f"cannot connect to {url}{where}: nothing is listening there; start the server (`voxgate serve` or "
                "`voxgate demo`) or check the port"
            )
        fail(
            f"cannot connect to {url}{where}: {str(exc) or type(cause).__name__}; "
            "check the URL and that the server runs"
        )
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        fail(f"'{url}'{where} is not a usable server URL ({exc}): expected something like {EXAMPLE_URL}")
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        fail(
            f"{url}{where} broke off the exchange ({str(exc) or type(exc).__name__}): is it a voxgate server, "
            "and is the scheme (http/https) right?"
        )
    except httpx.HTTPError as exc:
        fail(f"talking to {url}{where} failed: {str(exc) or type(exc).__name__}")


def open_client(url: str, token: str | None = None, *, timeout: float = TIMEOUT_S) -> httpx.Client:
    """An httpx client for `url` (checked first), with the token as a bearer header if given."""
    import httpx

    base = check_url(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=base,
        headers=headers,
        timeout=timeout,
        trust_env=False,
        verify=client_context(),
        limits=api_client_limits(),
    )


def error_text(response: httpx.Response) -> str:
    """The server's explanation of a 4xx/5xx: detail.error, its problems one per line, and the rule."""
    try:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else body
    except ValueError:  # an HTML error page or the like: some other program answers there
        return f"{response.reason_phrase} (not a voxgate server's answer: is this the right URL?)"
    if isinstance(detail, dict):
        problems = detail.get("problems")
        text = str(detail.get("error", "")) + ("".join(f"\n  {p}" for p in problems) if problems else "")
        if detail.get("rule"):
            text += f" [{detail['rule']}]"
        return text
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" if isinstance(d, dict) else str(d)
            for d in detail
        )
    return str(detail)


def _refused_token(profile: Profile) -> str:
    if profile.token_source == "VOXGATE_TOKEN":  # nosec B105: the name of the variable the token came from, not a password
        return (
            f"{profile.url} refused the token in VOXGATE_TOKEN (invalid, expired or revoked): set a valid "
            f"one, or unset it and run `voxgate login --url {profile.url}`"
        )
    return (
        f"{profile.url} refused the saved token from {profile.token_source} (invalid, expired or revoked): "
        f"run `voxgate login --url {profile.url}` to save a new one"
    )


def json_body(response: httpx.Response, url: str) -> Any:
    """The JSON of a successful answer; one clear line if it is not JSON (not a voxgate server?)."""
    try:
        return response.json()
    except ValueError:
        fail(
            f"{url} answered {response.request.method} {response.request.url.path} with something that is "
            "not JSON: is it a voxgate server?"
        )


def call(method: str, path: str, body: dict[str, Any] | None = None, as_json: bool = True) -> Any:
    """One authenticated request to the resolved server: the JSON answer, or one line on stderr and exit 1."""
    profile = resolve_profile()
    with server_errors(profile.url, profile.url_source), open_client(profile.url, profile.token) as client:
        response = client.request(method, path, json=body)
    if response.status_code == 401:
        fail(_refused_token(profile))
    if response.status_code >= 400:
        fail(f"{method} {path}: {response.status_code} {error_text(response)}")
    if response.status_code == 204:
        return None
    return json_body(response, profile.url) if as_json else response.text


# ---- signing in --------------------------------------------------------------------------------------


def sign_in(url: str, username: str, password: str, *, token_name: str = "cli", ttl_days: int = 30) -> str:
    """Sign in with a password and mint an API token (all scopes); return the token or exit 1 with one line."""
    base = check_url(url)
    with server_errors(base), open_client(base, timeout=30.0) as client:
        r = client.post("/api/auth/login", json={"username": username, "password": password})
        if r.status_code == 401:
            fail(f"sign-in to {base} failed: wrong username or password")
        if r.status_code != 200:
            fail(f"sign-in to {base} failed: {r.status_code} {error_text(r)}")
        # the session cookie is honoured for a change only with the CSRF header
        r = client.post(
            "/api/me/tokens",
            json={"name": token_name, "scopes": ["*"], "ttl_days": ttl_days},
            headers={CSRF_HEADER: "1"},
        )
        if r.status_code != 201:
            fail(f"signed in to {base}, but could not create an API token: {r.status_code} {error_text(r)}")
        token = json_body(r, base).get("token")
        client.post("/api/auth/logout", headers={CSRF_HEADER: "1"})  # the token is what stays
    if not token:
        fail(f"{base} created no API token: is it a voxgate server?")
    return str(token)


def save_credentials(url: str, token: str, username: str) -> Path:
    """Write {"url", "token", "username"} to the credentials file, readable only by you (0600)."""
    path = credentials_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"url": url, "token": token, "username": username}, fh)
            fh.write("\n")
    except OSError as exc:
        fail(f"cannot write the credentials to {path}: {exc.strerror or exc}")
    return path
