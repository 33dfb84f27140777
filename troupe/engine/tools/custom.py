"""``custom`` tools: a Python plugin registered under the ``troupe.tools`` entry point
group (``importlib.metadata``), named by ``configuration.plugin.name``.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."troupe.tools"]
    word_count = "my_package.tools:word_count"

and the object is a callable ``(input, settings, context) -> Any`` (``settings`` is
``configuration.plugin.settings``, secret-looking values opened; ``context`` the
``ToolContext``), or an object with such a ``run`` method. Its return value is the output;
raising ``ToolFailure`` fails with that code, any other exception with BIZ_003. Plugins run
in the node worker (or API thread) itself: install only code you trust, as you would any
package."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from troupe.engine.contract import NodeResult
from troupe.engine.tools.registry import ToolCall, ToolFailure, tool_runtime

GROUP = "troupe.tools"


def plugins() -> dict[str, Any]:
    """The installed plugins by name (read from the installed distributions on each call,
    so a package installed while the server runs is found)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


@tool_runtime("custom")
def run_custom(call: ToolCall) -> NodeResult:
    settings = call.section("plugin")
    name = settings.get("name")
    if not isinstance(name, str) or not name:
        raise ToolFailure("BIZ_003", "custom tool has no configuration.plugin.name")
    found = plugins().get(name)
    if found is None:
        raise ToolFailure("BIZ_003", f"no tool plugin {name!r} is installed (entry point group {GROUP!r})")
    try:
        target = found.load()
    except Exception as exc:
        raise ToolFailure("BIZ_003", f"tool plugin {name!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    fn = getattr(target, "run", target)
    if not callable(fn):
        raise ToolFailure("BIZ_003", f"tool plugin {name!r} is not callable")
    try:
        output = fn(call.input, dict(settings.get("settings") or {}), call.context)
    except ToolFailure:
        raise
    except Exception as exc:
        raise ToolFailure("BIZ_003", f"tool plugin {name!r} failed: {type(exc).__name__}: {exc}") from exc
    return NodeResult.success(output)
