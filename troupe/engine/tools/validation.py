"""Input and output checks against a tool's JSON Schemas (``jsonschema``): the tool's
``schema.input``/``schema.output`` and, when set, ``configuration.validation``'s
``inputSchema``/``outputSchema``. Schemas were checked when the tool was saved."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from troupe.engine.contract import ToolSpec


def _schemas(spec: ToolSpec, configuration: dict[str, Any], side: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    schema = (spec.schema or {}).get(side)
    if isinstance(schema, dict) and schema:
        found.append((f"schema.{side}", schema))
    extra = (configuration.get("validation") or {}).get(f"{side}Schema")
    if isinstance(extra, dict) and extra:
        found.append((f"configuration.validation.{side}Schema", extra))
    return found


@lru_cache(maxsize=256)
def _validator(doc: str) -> Any:
    import json

    schema = json.loads(doc)
    cls = validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _problem(spec: ToolSpec, configuration: dict[str, Any], side: str, value: Any) -> str | None:
    import json

    for where, schema in _schemas(spec, configuration, side):
        try:
            validator = _validator(json.dumps(schema, sort_keys=True, default=str))
        except SchemaError as exc:
            return f"{where} is not a valid JSON Schema: {exc.message}"
        error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))), None)
        if error is not None:
            path = "/".join(str(p) for p in error.absolute_path)
            at = f" at {path}" if path else ""
            return f"{side} does not match {where}{at}: {error.message}"
    return None


def check_input(spec: ToolSpec, configuration: dict[str, Any], value: Any) -> str | None:
    return _problem(spec, configuration, "input", value)


def check_output(spec: ToolSpec, configuration: dict[str, Any], value: Any) -> str | None:
    return _problem(spec, configuration, "output", value)
