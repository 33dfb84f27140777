"""Built-in workflow templates (data only): research-and-summarise, support
triage with a condition, content pipeline with a bounded loop, webhook notify.

Templates have no company and no creator; their agent nodes configure a
provider and model inline (the simulated provider), so they validate and run
without any agent existing. Tags ``industry:<x>`` and ``complexity:<x>`` serve
the template filters.

Revision ID: 0004_workflow_templates
Revises: 0001_initial
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_workflow_templates"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Fixed ids so the downgrade removes exactly these rows.
_NS = uuid.UUID("6f1c3f0e-5b8e-4c1e-9a55-0e4d7b7a1a00")

_SIMULATED = {"provider": "simulated", "model": "simulated-1"}

_CONFIG = {
    "strategy": "sequential", "timeout": 3600,
    "retryPolicy": {"maxRetries": 3, "backoffStrategy": "exponential", "retryableErrors": []},
    "errorHandling": "stop",
    "logging": {"level": "info", "includeInputs": True, "includeOutputs": True, "retention": 30},
    "notifications": {"onStart": False, "onComplete": True, "onError": True, "channels": []},
    "variables": {}, "secrets": {},
}


def _node(node_id: str, type_: str, label: str, x: int, y: int, **data) -> dict:
    return {"id": node_id, "type": type_, "position": {"x": x, "y": y}, "data": {"label": label, **data}}


def _agent(node_id: str, label: str, x: int, y: int, system: str, prompt: str) -> dict:
    return _node(node_id, "agent", label, x, y,
                 configuration={**_SIMULATED, "systemPrompt": system, "prompt": prompt})


def _edge(source: str, target: str, type_: str = "default", condition: str | None = None) -> dict:
    edge = {"id": f"{source}-{target}", "source": source, "target": target, "type": type_, "animated": False}
    if condition is not None:
        edge["condition"] = condition
    return edge


TEMPLATES = [
    {
        "name": "Research and summarise",
        "description": "An analyst agent researches the question, a writer agent turns the notes into a "
                       "short summary.",
        "template_category": "research",
        "tags": ["research", "summary", "industry:general", "complexity:simple"],
        "nodes": [
            _node("input", "input", "Question", 0, 0),
            _agent("research", "Research", 250, 0, "You are a careful research analyst.",
                   "Research this question and list the key facts with sources: {{input.question}}"),
            _agent("summarise", "Summarise", 500, 0, "You write clear, short summaries.",
                   "Summarise these notes in five bullet points:\n{{nodes.research.output}}"),
            _node("output", "output", "Summary", 750, 0, configuration={"value": "{{nodes.summarise.output}}"}),
        ],
        "edges": [_edge("input", "research"), _edge("research", "summarise"), _edge("summarise", "output")],
    },
    {
        "name": "Support triage",
        "description": "Classifies a support ticket; urgent tickets are escalated by email, the others get a "
                       "drafted reply.",
        "template_category": "support",
        "tags": ["support", "triage", "industry:customer-service", "complexity:medium"],
        "nodes": [
            _node("input", "input", "Ticket", 0, 0),
            # The instruction sits in the system prompt so that the user turn is the ticket alone:
            # a model answers "urgent"/"normal"; the simulated provider echoes the ticket.
            _agent("classify", "Classify", 250, 0,
                   "You triage customer support tickets. Answer with exactly one word: urgent or normal.",
                   "{{input.ticket}}"),
            _node("is_urgent", "condition", "Urgent?", 500, 0,
                  conditions=[{"field": "nodes.classify.output.text", "operator": "contains",
                               "value": "urgent"}]),
            _node("escalate", "email", "Escalate", 750, -100,
                  configuration={"to": "{{vars.escalationEmail}}", "subject": "Urgent ticket",
                                 "body": "{{input.ticket}}"}),
            _agent("reply", "Draft reply", 750, 100, "You are a friendly support agent.",
                   "Draft a reply to this ticket: {{input.ticket}}"),
            _node("output", "output", "Result", 1000, 0),
        ],
        "edges": [_edge("input", "classify"), _edge("classify", "is_urgent"),
                  _edge("is_urgent", "escalate", "conditional", "true"),
                  _edge("is_urgent", "reply", "conditional", "false"),
                  _edge("escalate", "output"), _edge("reply", "output")],
        "variables": {"escalationEmail": "oncall@example.com"},
    },
    {
        "name": "Content pipeline",
        "description": "Outlines an article, writes each section in a bounded loop, then edits the draft.",
        "template_category": "content",
        "tags": ["content", "writing", "industry:media", "complexity:complex"],
        "nodes": [
            _node("input", "input", "Brief", 0, 0),
            _agent("outline", "Outline", 250, 0, "You plan articles.",
                   "Write a list of section titles for an article about: {{input.topic}}"),
            _node("sections", "loop", "For each section", 500, 0,
                  configuration={"maxIterations": 10, "items": "{{nodes.outline.output}}"}),
            _agent("write", "Write section", 500, 200, "You are a skilled writer.",
                   "Write the section titled {{loop.item}} of an article about {{input.topic}}."),
            _agent("edit", "Edit", 750, 0, "You are a meticulous editor.",
                   "Edit this draft for clarity and flow:\n{{nodes.write.output}}"),
            _node("output", "output", "Article", 1000, 0, configuration={"value": "{{nodes.edit.output}}"}),
        ],
        "edges": [_edge("input", "outline"), _edge("outline", "sections"), _edge("sections", "write"),
                  _edge("write", "sections"), _edge("sections", "edit"), _edge("edit", "output")],
    },
    {
        "name": "Webhook notify",
        "description": "Posts the run's input to a webhook (set vars.webhookUrl) and returns its answer.",
        "template_category": "automation",
        "tags": ["webhook", "notification", "industry:general", "complexity:simple"],
        "nodes": [
            _node("input", "input", "Event", 0, 0),
            _node("notify", "webhook", "Notify", 250, 0,
                  configuration={"url": "{{vars.webhookUrl}}", "method": "POST",
                                 "headers": {"Content-Type": "application/json"}, "body": "{{input}}"}),
            _node("output", "output", "Response", 500, 0, configuration={"value": "{{nodes.notify.output}}"}),
        ],
        "edges": [_edge("input", "notify"), _edge("notify", "output")],
        "variables": {"webhookUrl": "https://hooks.example.com/troupe"},
    },
]


def _id(name: str) -> uuid.UUID:
    return uuid.uuid5(_NS, name)


def upgrade() -> None:
    workflows = sa.table(
        "workflows",
        sa.column("id", sa.UUID()), sa.column("name", sa.String()), sa.column("description", sa.Text()),
        sa.column("version", sa.String()), sa.column("nodes", postgresql.JSONB()),
        sa.column("edges", postgresql.JSONB()),
        sa.column("configuration", postgresql.JSONB()), sa.column("status", sa.String()),
        sa.column("triggers", postgresql.JSONB()),
        sa.column("tags", postgresql.ARRAY(sa.Text())), sa.column("is_template", sa.Boolean()),
        sa.column("template_category", sa.String()),
    )
    rows = []
    for t in TEMPLATES:
        config = json.loads(json.dumps(_CONFIG))
        config["variables"] = t.get("variables", {})
        rows.append({"id": _id(t["name"]), "name": t["name"], "description": t["description"], "version": "1.0.0",
                     "nodes": t["nodes"], "edges": t["edges"], "configuration": config, "status": "active",
                     "triggers": [{"id": "manual", "type": "manual", "configuration": {}, "enabled": True}],
                     "tags": t["tags"], "is_template": True, "template_category": t["template_category"]})
    op.bulk_insert(workflows, rows)


def downgrade() -> None:
    ids = ", ".join(f"'{_id(t['name'])}'" for t in TEMPLATES)
    op.execute(f"DELETE FROM workflows WHERE id IN ({ids}) AND company_id IS NULL")
