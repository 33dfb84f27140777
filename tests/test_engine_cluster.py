"""A worker node removed mid-run loses no run (multi-node Ray cluster on one
machine). The scenario runs in its own process (tests/cluster_scenario.py):
it starts its own Ray cluster and Troupe stack and cannot share the session's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_removing_a_worker_node_mid_run_loses_no_run():
    # Its own Serve settings (and HAProxy side ports): nothing inherited from this session's stack.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "TROUPE_NODE_TASK", "RAY_SERVE_"))}
    result = subprocess.run([sys.executable, "-m", "tests.cluster_scenario"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=330)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"scenario printed no report (exit {result.returncode}):\n{result.stderr[-4000:]}"
    report = json.loads(lines[-1])
    assert len(report["statuses"]) == 4
    assert set(report["statuses"].values()) == {"completed"}, report
    for task_id, counts in report["completed"].items():
        # Every node of every run completed exactly once, though some attempts died with the node.
        assert sorted(counts) == report["expectedNodes"], (task_id, counts)
        assert set(counts.values()) == {1}, (task_id, counts)
        assert report["outputs"][task_id] == {f"w{i}": 2.0 for i in range(4)}  # NODE_SECONDS
    assert report["nodes"] == 2  # the head and the remaining worker
    # Ray's own records show a node-task attempt on the removed node that never finished
    # there: the node went with work on it (every node still completed once, above).
    assert report["attemptsDiedWithNode"] >= 1, report
    assert result.returncode == 0, result.stderr[-4000:]
