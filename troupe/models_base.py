"""The pydantic bases every schema builds on: camelCase JSON, snake_case Python.

Below both ``troupe.platform`` and ``troupe.engine`` so that the engine's graph
models (``troupe.engine.graph_models``) use them without importing HTTP code;
``troupe.platform.schemas`` re-exports them.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ModelWrapValidatorHandler,
    PrivateAttr,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from troupe.errors import invalid


class CamelModel(BaseModel):
    """Python stays snake_case; the JSON is the spec's camelCase."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True,
                              serialize_by_alias=True)


# What pydantic's whitespace stripping removes (Unicode White_Space, as Rust's str::trim),
# spelled out: JSON Schema's \s (ECMAScript) and Python's differ from it and from each other.
WHITESPACE = r"[\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# PostgreSQL text cannot hold U+0000: request text never carries it (deps.no_nul_characters).
NOT_NUL = r"[^\u0000]"
VISIBLE = r"[^\u0000" + WHITESPACE[1:]  # neither NUL nor whitespace
_NO_NUL = rf"^{NOT_NUL}*$"
_VISIBLE_TEXT = rf"^{NOT_NUL}*{VISIBLE}{NOT_NUL}*$"


def state_text_rules(schema: dict[str, Any], *, stripped: bool) -> None:
    """Write what a request string must be into its JSON Schema (``pattern``): free of NUL, and
    (when stripped before its length is checked) with a visible character where a minimum length
    is required. Strings with a pattern, a format or an enum of their own keep them.
    Applied to the OpenAPI document's request schemas (``troupe/platform/openapi.py``)."""
    for prop in schema.get("properties", {}).values():
        for option in (prop, *prop.get("anyOf", ())):
            for text in (option, option.get("items") or {}):  # a string, or a list of them
                if text.get("type") != "string" or {"pattern", "format", "enum", "const"} & set(text):
                    continue
                visible = stripped and text.get("minLength", 0) >= 1
                text["pattern"] = _VISIBLE_TEXT if visible else _NO_NUL


class StrictInput(CamelModel):
    """Request bodies: unknown fields are refused, so server-owned fields
    (ownerId, rating, ...) cannot be mass-assigned."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              str_strip_whitespace=True)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def omittable(**constraints: Any) -> Any:
    """A body field that may be left out ("keep the stored value") but not sent as
    ``null``: annotate it with the non-null type and use this as its default. The
    OpenAPI then says what validation does (no ``null``, no made-up default)."""
    return Field(None, json_schema_extra=_no_default, **constraints)


class RoundTripInput(StrictInput):
    """A PUT body that also takes back what the GET answered.

    ``read_models`` names the response models of the resource (looked up in the
    class's own module when first needed, so the names follow those models as they
    change). A field of one of them that this body does not take itself is
    server-owned (``id``, ``createdAt``, ``rating``, ``usage``, embedded objects, ...):
    it is accepted with any value and ignored. Any other unknown field is still
    refused (``extra="forbid"``, VAL_001 naming it).

    Ignored rather than compared with the stored value: counters, usage, metrics,
    ``updatedAt`` and runtime statuses change between a client's GET and its PUT,
    so refusing a "changed" read-only value would refuse honest round trips. The few
    names in ``compared`` are the exception: stable values a client may well mean to
    change (a user's role, status, email), which only their own routes change. The
    service calls ``refuse_changed`` with the stored answer, so a different value is
    VAL_001 naming the field instead of a silent no-op.
    """

    read_models: ClassVar[tuple[str | type[BaseModel], ...]] = ()
    compared: ClassVar[frozenset[str]] = frozenset()
    _echoed: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def read_only_names(cls) -> frozenset[str]:
        cached = cls.__dict__.get("_read_only_cache")
        if cached is not None:
            return cached
        module = sys.modules[cls.__module__]
        own: set[str] = set()
        for name, info in cls.model_fields.items():
            own.update(n for n in (name, info.alias, info.validation_alias) if isinstance(n, str))
        names: set[str] = set()
        for model_name in cls.read_models:
            model = getattr(module, model_name) if isinstance(model_name, str) else model_name
            names.update(info.serialization_alias or info.alias or name
                         for name, info in model.model_fields.items())
        result = frozenset(names - own)
        cls._read_only_cache = result  # type: ignore[attr-defined]
        return result

    @model_validator(mode="wrap")
    @classmethod
    def _ignore_read_only(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        if not (isinstance(data, dict) and cls.read_models):
            return handler(data)
        read_only = cls.read_only_names()
        model = handler({key: value for key, value in data.items() if key not in read_only})
        model._echoed = {key: data[key] for key in cls.compared & read_only if key in data}
        return model

    def refuse_changed(self, stored: BaseModel) -> None:
        """VAL_001 naming the first ``compared`` field sent with another value than ``stored``'s."""
        if not self._echoed:
            return
        current = stored.model_dump(mode="json", by_alias=True)
        for name, sent in sorted(self._echoed.items()):
            if sent != current.get(name):
                raise invalid(f"{name} cannot be changed here (it has its own route); send it unchanged or "
                              "leave it out", field=name)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        properties = target.setdefault("properties", {})
        for name in sorted(cls.read_only_names()):
            properties.setdefault(name, {"readOnly": True,
                                         "description": "Server-owned: accepted back from a GET and ignored"})
        return schema
