"""The `troupe` console script end to end, each command a subprocess against the running stack:
login, the lists, `workflows run --watch`, `tasks batch` (clean output off a terminal, a progress
bar on one), `--json`, and the exit codes (0 all ok, 1 some item failed, 2 usage or auth)."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.utils.engine import chain, make_agent, make_company, make_workflow, node

SCRIPT = Path(sys.executable).parent / "troupe"


@pytest.fixture
def cli(base_url, tmp_path):
    assert SCRIPT.exists(), "the troupe console script is installed by `pip install -e .` (make install)"
    env = {**os.environ, "TROUPE_CONFIG": str(tmp_path / "config.json"), "TROUPE_URL": base_url,
           "NO_COLOR": "1"}
    env.pop("TROUPE_PASSWORD", None)

    def run(*args: str, stderr=subprocess.PIPE, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
                              timeout=timeout, cwd=tmp_path)

    run.env = env  # type: ignore[attr-defined]
    run.dir = tmp_path  # type: ignore[attr-defined]
    return run


def _login(cli, user) -> None:
    done = cli("login", "--email", user.email, "--password", user.password)
    assert done.returncode == 0, done.stderr
    assert user.email in done.stdout


async def _workflow(user, **settings):
    company = await make_company(user.id, maxConcurrency=20, **settings)
    # The suite's fault plugin fails the input node with the code in input.fail.
    workflow = await make_workflow(company, user.id, [node("in", "input", simulateError="{{input.fail}}"),
                                                      node("out", "output")], chain("in", "out"),
                                   retryPolicy={"maxRetries": 0})
    return company, workflow


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _clean(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text, repr(text[:200])  # no escape codes, no redrawn bar


async def test_login_lists_and_auth_exit_codes(cli, user):
    assert cli("companies", "list").returncode == 2  # not logged in yet
    wrong = cli("login", "--email", user.email, "--password", "Wr0ng!Passw0rd", "--json")
    assert wrong.returncode == 2 and json.loads(wrong.stderr)["error"]["code"] == "AUTH_006"
    _login(cli, user)
    config = Path(cli.env["TROUPE_CONFIG"])
    assert _mode(config) == 0o600
    assert json.loads(_read(config))["refreshToken"]

    company, workflow = await _workflow(user)
    agent = await make_agent(company, user.id)
    listed = cli("companies", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [c["id"] for c in json.loads(listed.stdout)] == [company]
    human = cli("companies", "list")
    assert human.returncode == 0 and human.stdout.splitlines()[0].split()[:2] == ["ID", "NAME"]
    assert company in human.stdout
    assert [a["id"] for a in json.loads(cli("agents", "list", "--company", company, "--json").stdout)] == [agent]
    assert [w["id"] for w in json.loads(cli("workflows", "list", "--company", company, "--json").stdout)] == [
        workflow]
    assert json.loads(cli("tasks", "list", "--company", company, "--json").stdout) == []

    assert cli("companies", "list", "--no-such-option").returncode == 2  # usage
    assert cli("frobnicate").returncode == 2
    missing = cli("workflows", "run", "00000000-0000-0000-0000-000000000000", "--json")
    assert missing.returncode == 2 and json.loads(missing.stderr)["error"]["code"] == "RES_001"
    _write(config, json.dumps({**json.loads(_read(config)), "token": "not-a-token", "refreshToken": None}))
    refused = cli("companies", "list")
    assert refused.returncode == 2 and "AUTH_002" in refused.stderr


async def test_workflows_run_watch(cli, user):
    _login(cli, user)
    _, workflow = await _workflow(user)
    (cli.dir / "ok.json").write_text(json.dumps({"text": "hi", "fail": None}))
    (cli.dir / "bad.json").write_text(json.dumps({"fail": "BIZ_004"}))
    done = cli("workflows", "run", workflow, "--input", "ok.json", "--watch")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("completed ")
    assert json.loads(done.stdout.split("\n", 1)[1])["text"] == "hi"
    assert "completed" in done.stderr and "%]" in done.stderr  # live progress lines
    as_json = cli("workflows", "run", workflow, "--input", "bad.json", "--json")
    assert as_json.returncode == 1, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["status"] == "failed" and result["error"]["code"] == "BIZ_004"
    (cli.dir / "broken.json").write_text("{not json")
    assert cli("workflows", "run", workflow, "--input", "broken.json").returncode == 2


async def test_tasks_batch_results_summary_and_progress(cli, user):
    _login(cli, user)
    _, workflow = await _workflow(user)
    inputs = [{"i": i, "fail": "BIZ_004" if i % 7 == 3 else None} for i in range(40)]
    (cli.dir / "inputs.jsonl").write_text("".join(json.dumps(v) + "\n" for v in inputs))

    # Off a terminal: no bar, just the summary line; results in input order with per-item errors; exit 1.
    done = cli("tasks", "batch", "--workflow", workflow, "inputs.jsonl", "--out", "results.jsonl")
    assert done.returncode == 1, done.stderr
    _clean(done.stdout + done.stderr)
    assert done.stderr == ""
    failed = sum(1 for v in inputs if v["fail"])
    assert done.stdout.splitlines() == [done.stdout.strip()]
    assert done.stdout.startswith(f"40 items: {40 - failed} completed, {failed} failed, 0 cancelled, 0 unfinished")
    rows = [json.loads(line) for line in (cli.dir / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(40))
    for row, given in zip(rows, inputs, strict=True):
        if given["fail"]:
            assert row["status"] == "failed" and row["error"]["code"] == "BIZ_004"
        else:
            assert row["status"] == "completed" and row["output"]["i"] == given["i"] and row["error"] is None

    # --json, every item fine: exit 0 and one JSON document.
    (cli.dir / "good.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(12)))
    good = cli("tasks", "batch", "--workflow", workflow, "good.jsonl", "--json")
    assert good.returncode == 0, good.stderr
    body = json.loads(good.stdout)
    assert body["summary"]["total"] == 12 and body["summary"]["completed"] == 12
    assert [r["output"]["i"] for r in body["results"]] == list(range(12))

    # On a terminal (stderr a pty) the progress bar is drawn there; stdout stays the summary alone.
    master, slave = pty.openpty()
    drawn: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            drawn.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        shown = cli("tasks", "batch", "--workflow", workflow, "good.jsonl", "--out", "tty.jsonl", stderr=slave)
    finally:
        os.close(slave)
        reader.join(10)
        os.close(master)
    assert shown.returncode == 0
    assert shown.stdout.startswith("12 items: 12 completed")
    assert "12/12" in b"".join(drawn).decode(errors="replace")

    # Usage errors: a line that is not JSON, a missing file, no --workflow.
    (cli.dir / "broken.jsonl").write_text('{"i": 1}\n{oops\n')
    broken = cli("tasks", "batch", "--workflow", workflow, "broken.jsonl")
    assert broken.returncode == 2 and "line 2" in broken.stderr
    assert cli("tasks", "batch", "--workflow", workflow, "nope.jsonl").returncode == 2
    assert cli("tasks", "batch", "good.jsonl").returncode == 2
