"""JSON Schemas of the bundle files, for editors (yaml-language-server) and other tools."""

from __future__ import annotations

from typing import Any

from voxgate.bundle.models import Agent, Topic


def json_schema(kind: str = "agent") -> dict[str, Any]:
    model = Agent if kind == "agent" else Topic
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://voxgate.dev/schemas/{kind}.schema.json"
    return schema
