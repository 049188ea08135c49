"""A lone surrogate ("\\ud800" in JSON) in a request's text is refused with a clear 422, never a 500."""

from __future__ import annotations

import httpx
import pytest

LONE = ["\\ud800", "hello \\udfff there", "\\udc00\\ud800"]  # as JSON escapes: no UTF-8 can carry them


@pytest.fixture(scope="module")
def base(harbor_worker: str) -> str:
    return harbor_worker


def _post(url: str, raw_json: str) -> httpx.Response:
    return httpx.post(url, content=raw_json.encode("ascii"), headers={"content-type": "application/json"}, timeout=30)


def _assert_clear_refusal(response: httpx.Response, field: str) -> None:
    assert response.status_code in (400, 422), (response.status_code, response.text)
    detail = response.json()["detail"]
    problem = next(d for d in detail if d["loc"][-1] == field)
    assert "surrogate" in problem["msg"]


@pytest.mark.parametrize("text", LONE)
def test_chat_turn_with_a_lone_surrogate_is_refused_clearly(base: str, text: str) -> None:
    session = httpx.post(f"{base}/api/agents/harbor-support/sessions", timeout=30).json()["session_id"]
    _assert_clear_refusal(_post(f"{base}/api/sessions/{session}/turns", f'{{"text": "{text}"}}'), "text")
    # the session is untouched and still answers a proper turn
    turn = httpx.post(f"{base}/api/sessions/{session}/turns", json={"text": "what are your opening hours"}, timeout=30)
    assert turn.status_code == 200
    assert httpx.get(f"{base}/health", timeout=30).status_code == 200


@pytest.mark.parametrize("text", LONE)
def test_login_name_with_a_lone_surrogate_is_refused_clearly(base: str, text: str) -> None:
    response = _post(f"{base}/api/auth/login", f'{{"username": "{text}", "password": "a long enough password"}}')
    _assert_clear_refusal(response, "username")
    assert httpx.get(f"{base}/health", timeout=30).status_code == 200
