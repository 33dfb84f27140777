"""Node handlers for the test suite only (loaded in every Ray worker through
``TROUPE_NODE_PLUGINS``, set in tests/conftest.py): they wrap the real ``input``
and ``output`` handlers with injected faults, so production node code has none.

Configuration keys honoured here: ``simulateError`` (fail with that code),
``simulateFailAttempts`` (fail the first N attempts with SYS_003) and ``sleep``
(seconds, before running).
"""

from __future__ import annotations

import time

from troupe.engine import nodes
from troupe.engine.contract import NodeResult, NodeSpec


def _with_faults(real: nodes.NodeHandler) -> nodes.NodeHandler:
    def handler(spec: NodeSpec) -> NodeResult:
        config = spec.config
        if config.get("sleep"):
            time.sleep(float(config["sleep"]))
        if config.get("simulateError"):
            return NodeResult.fail(str(config["simulateError"]), "[test] injected failure")
        if spec.attempt < int(config.get("simulateFailAttempts") or 0):
            return NodeResult.fail("SYS_003", f"[test] injected failure on attempt {spec.attempt}")
        return real(spec)

    return handler


for _type in ("input", "output"):
    _real = nodes.handler_for(_type)
    assert _real is not None
    nodes.node_handler(_type)(_with_faults(_real))
