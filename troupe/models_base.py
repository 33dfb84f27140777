"""The pydantic bases every schema builds on: camelCase JSON, snake_case Python.

Below both ``troupe.platform`` and ``troupe.engine`` so that the engine's graph
models (``troupe.engine.graph_models``) use them without importing HTTP code;
``troupe.platform.schemas`` re-exports them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    """Python stays snake_case; the JSON is the spec's camelCase."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True,
                              serialize_by_alias=True)


class StrictInput(CamelModel):
    """Request bodies: unknown fields are refused, so server-owned fields
    (ownerId, rating, ...) cannot be mass-assigned."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)
