"""Agent test/train, tool test, single_agent tasks and the email node (development outbox)."""

from __future__ import annotations

from tests.utils.engine import (
    chain,
    completed_once,
    executions,
    make_agent,
    make_company,
    make_tool,
    make_workflow,
    node,
    wait_status,
)
from tests.utils.fixtures import assert_error, assert_ok


async def test_agent_test_and_train(client, user):
    company = await make_company(user.id)
    agent = await make_agent(company, user.id)
    data = assert_ok(await client.post(f"/api/agents/{agent}/test", headers=user.headers, json={"input": "hello"}))
    assert data["output"].startswith("[simulated]") and data["metadata"]["tokensUsed"] > 0
    assert data["metadata"]["model"] == "sim-1" and data["metadata"]["cost"] == 0
    trained = assert_ok(await client.post(f"/api/agents/{agent}/train", headers=user.headers, json={
        "trainingData": [{"input": "2+2?", "output": "4"}]}))
    assert trained["examplesStored"] == 1 and trained["version"] == "1.0.1"
    assert_error(await client.post(f"/api/agents/{agent}/train", headers=user.headers, json={
        "trainingData": ["no shape"]}), 422, "VAL_003", "trainingData.0")
    # Few-shot memory has no epochs or learning rate: refused by name, not accepted and ignored.
    assert_error(await client.post(f"/api/agents/{agent}/train", headers=user.headers, json={
        "trainingData": [{"input": "a", "output": "b"}], "epochs": 3}), 422, "VAL_001", "epochs")


async def test_tool_test_validates_schema_and_records_call(client, user):
    tool = await make_tool(user.id)
    data = assert_ok(await client.post(f"/api/tools/{tool}/test", headers=user.headers,
                                       json={"input": {"expression": "2*(3+4)"}}))
    assert data["success"] is True and data["output"]["result"] == 14
    assert_error(await client.post(f"/api/tools/{tool}/test", headers=user.headers, json={"input": {"x": 1}}),
                 422, "VAL_001", "input")
    # A refused expression is the caller's error (see tests/test_security_platform.py for the bounds).
    assert_error(await client.post(f"/api/tools/{tool}/test", headers=user.headers,
                                   json={"input": {"expression": "__import__('os')"}}), 422, "VAL_001",
                 "input.expression")


async def test_single_agent_task_and_email_node_send_once(client, user):
    company = await make_company(user.id)
    agent = await make_agent(company, user.id)
    task = assert_ok(await client.post("/api/tasks", headers=user.headers, json={
        "name": "ask", "type": "single_agent", "priority": "high", "companyId": company, "agentId": agent,
        "input": {"prompt": "summarise"}}), 201)
    assert_ok(await client.post(f"/api/tasks/{task['id']}/execute", headers=user.headers, json={}), 202)
    done = await wait_status(client, user, task["id"])
    assert done["status"] == "completed" and "summarise" in done["output"]["text"]
    address = f"engine-{task['id'][:8]}@example.com"
    wf = await make_workflow(company, user.id, [node("in", "input"),
                                                node("mail", "email", to=address, subject="Hi {{input.name}}",
                                                     body="done"),
                                                node("out", "output")], chain("in", "mail", "out"))
    run = assert_ok(await client.post(f"/api/workflows/{wf}/execute", headers=user.headers,
                                      json={"input": {"name": "Ada"}}), 202)
    finished = await wait_status(client, user, run["id"])
    assert finished["status"] == "completed"
    # Retrying from the email step must not send it again: its idempotency key is already claimed.
    assert_ok(await client.post(f"/api/tasks/{run['id']}/retry", headers=user.headers, json={"fromStep": "mail"}), 202)
    again = await wait_status(client, user, run["id"])
    assert again["status"] == "completed"
    rows = await executions(client, user, run["id"])
    completed_once(rows)
    mail_rows = [r for r in rows if r["nodeId"] == "mail"]
    assert mail_rows[0]["idempotencyKey"] == f"{run['id']}:mail:0"
    from troupe.infra.mail import read_outbox

    sent = read_outbox(address)
    assert len(sent) == 1 and sent[0]["subject"] == "Hi Ada"
    listed = assert_ok(await client.get(f"/api/workflows/{wf}/executions", headers=user.headers))
    assert [t["id"] for t in listed] == [run["id"]]
