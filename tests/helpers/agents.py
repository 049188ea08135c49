"""Edits to a writable copy of the Harbor agent: a connector (and an action that uses it) added to agent.yaml."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

#: a fixed "now" for builds and DLP checks, so expiry and dates in manifests do not depend on the day
NOW = dt.datetime(2030, 1, 7, 12, 0, tzinfo=dt.UTC)

SOCIAL_CONNECTOR = """\
  social_api:
    type: http
    description: A social network's posting API
    base_url: "https://api.socialnet.example"
    hosts: ["api.socialnet.example"]
    classification: public
"""
SOCIAL_ACTION = """\
  post_update:
    connector: social_api
    method: POST
    path: /v1/posts
    customer_scoped: false
"""


def add_connector(agent_dir: Path, connector: str = SOCIAL_CONNECTOR, action: str = SOCIAL_ACTION) -> int:
    """Add a connector (and an action using it) to agent.yaml; returns the connector's line."""
    path = agent_dir / "agent.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace("connectors:\n", "connectors:\n" + connector, 1).replace("actions:\n", "actions:\n" + action, 1)
    path.write_text(text, encoding="utf-8")
    first = connector.splitlines()[0]
    return text.splitlines().index(first) + 1
