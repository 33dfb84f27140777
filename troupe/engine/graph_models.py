"""The spec's WorkflowNode, WorkflowEdge and WorkflowCondition as pydantic models:
the one definition, imported by the workflows and companies schemas.

These type the JSON a client sends and reads back. What a graph needs in order
to run (an input node, bounded loops, reachable nodes, ...) is checked by
``troupe.engine.validate.validate_graph``, so drafts can be stored incomplete.
The node and edge type literals come from ``troupe.engine.contract``.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import Field

from troupe.engine.contract import EdgeType, Logic, NodeType, Operator
from troupe.engine.validate import Limits
from troupe.models_base import StrictInput

Ident = Annotated[str, Field(min_length=1, max_length=100)]
Label = Annotated[str, Field(min_length=1, max_length=200)]
Color = Annotated[str, Field(max_length=50)]


class WorkflowCondition(StrictInput):
    field: Annotated[str, Field(min_length=1, max_length=500)]
    operator: Operator
    value: Any = None
    logic: Logic | None = None


class Position(StrictInput):
    x: float = Field(0, ge=-1e6, le=1e6)
    y: float = Field(0, ge=-1e6, le=1e6)


class NodeData(StrictInput):
    label: Label
    agent_id: uuid.UUID | None = None
    tool_id: uuid.UUID | None = None
    # Keys per node type: see troupe.engine.validate.
    configuration: dict[str, Any] | None = None
    conditions: Annotated[list[WorkflowCondition], Field(max_length=100)] | None = None


class NodeStyle(StrictInput):
    background_color: Color | None = None
    border_color: Color | None = None
    color: Color | None = None


class WorkflowNode(StrictInput):
    id: Ident
    type: NodeType
    position: Position = Field(default_factory=Position)
    data: NodeData
    style: NodeStyle | None = None


class EdgeStyle(StrictInput):
    stroke: Color | None = None
    stroke_width: float | None = Field(None, ge=0, le=100)


class WorkflowEdge(StrictInput):
    id: Ident
    source: Ident
    target: Ident
    type: EdgeType = "default"
    condition: Annotated[str, Field(max_length=2000)] | None = None
    animated: bool = False
    style: EdgeStyle | None = None


Nodes = Annotated[list[WorkflowNode], Field(max_length=Limits.max_nodes)]
Edges = Annotated[list[WorkflowEdge], Field(max_length=Limits.max_edges)]
