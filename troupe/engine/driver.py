"""The run driver: executes one task's workflow graph, one Ray task per node execution.

It runs as an asyncio task inside the company's CompanyActor, which admitted the
run and holds its lease (epoch). It holds no state that is not in Postgres: on
every start it rebuilds the run from the task's ``task_executions`` rows (completed
nodes are reused, never re-executed), so resume after pause, wake-up after a
parked delay, retry from a step and recovery after a lost driver are one code path.

Records go through the run's ``Ledger`` (troupe.engine.records): attempts started
and finished, their logs and the task's progress are buffered and written with
one fenced statement per wave, always before any node downstream is submitted.
Outages of Postgres or Redis are waited out; any other exception fails the run
(SYS_001, reason logged) instead of stranding it; a lost lease stops the driver
without writing anything more.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import ray
from sqlalchemy import select, update

from troupe.config import get_settings
from troupe.db import models
from troupe.db.session import session_scope
from troupe.engine import graph as g
from troupe.engine import records, templates, triggers
from troupe.engine.contract import (
    OVERRIDABLE_VARIABLES,
    SIDE_EFFECT_TYPES,
    WAITING_NODE_CPUS,
    WAITING_TYPES,
    NodeResult,
    NodeSpec,
    ToolSpec,
    refused_variables,
)
from troupe.engine.nodes import PARK_AFTER_SECONDS, delay_seconds, execute_node, mask_sealed
from troupe.engine.records import Fenced, Ledger, durable
from troupe.engine.validate import errors_of, validate_graph
from troupe.timeutil import iso, utcnow

log = logging.getLogger("troupe.engine")
DEFAULT_NODE_TIMEOUT = 300.0
DEFAULT_WORKFLOW_TIMEOUT = 3600.0
PROGRESS_EVENT_SECONDS = 0.05


class Parked(Exception):
    def __init__(self, wake_at: Any) -> None:
        super().__init__("parked")
        self.wake_at = wake_at


class RunFailed(Exception):
    def __init__(self, code: str, message: str, node_id: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.node_id = code, message, node_id


@dataclass
class Outcome:
    kind: str  # ok | failed | skipped
    output: Any = None
    error: dict[str, Any] | None = None


@dataclass
class RunControl:
    cancel_reason: str | None = None
    pause_requested: bool = False
    refs: set[Any] = field(default_factory=set)

    def cancel_nodes(self) -> None:
        for ref in list(self.refs):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished
                pass


def single_agent_graph(task: models.Task) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """A ``single_agent`` task is a three-node workflow: input -> agent -> output."""
    prompt = "{{input.prompt}}" if isinstance(task.input, dict) and "prompt" in task.input else None
    agent_cfg: dict[str, Any] = {"prompt": prompt} if prompt else {}
    nodes = [{"id": "input", "type": "input", "data": {"label": "Input"}},
             {"id": "agent", "type": "agent", "data": {"label": "Agent", "agentId": str(task.agent_id),
                                                       "configuration": agent_cfg}},
             {"id": "output", "type": "output", "data": {"label": "Output"}}]
    edges = [{"id": "e1", "source": "input", "target": "agent"}, {"id": "e2", "source": "agent", "target": "output"}]
    return nodes, edges, {"strategy": "sequential", "errorHandling": "stop"}


class RunDriver:
    def __init__(self, task_id: uuid.UUID, control: RunControl, epoch: int = 0) -> None:
        self.task_id = task_id
        self.control = control
        self.epoch = epoch
        self.ledger = Ledger(task_id, epoch)
        self.outcomes: dict[str, Outcome] = {}
        self.completed: dict[tuple[str, int], Any] = {}
        self.final_failures: dict[tuple[str, int], dict[str, Any]] = {}
        self.parked_rows: dict[tuple[str, int], tuple[uuid.UUID, Any]] = {}
        self.loop_ctx: dict[str, Any] = {}
        self.tools: dict[str, ToolSpec] = {}
        self.schedule: dict[str, Any] = {}
        self.triggers: list[Any] = []
        self.tokens = 0
        self.cost = 0.0
        self.label = ""  # "<company>/<workflow>", in node task names
        self._pending_event: tuple[Any, ...] | None = None
        self._event_timer: asyncio.TimerHandle | None = None
        self._last_event = 0.0
        # Group commit: writers buffered up to ``_wanted`` are on disk up to ``_written``.
        self._wanted = 0
        self._written = 0
        self._commit_lock = asyncio.Lock()

    # ------------------------------------------------------------------ loading
    async def _load(self) -> None:
        async with session_scope() as session:
            task = await session.get(models.Task, self.task_id)
            if task is None:
                raise RunFailed("RES_001", "task not found")
            self.task = task
            if task.workflow_id:
                workflow = await session.get(models.Workflow, task.workflow_id)
                if workflow is None:
                    raise RunFailed("RES_001", "workflow not found")
                self.label = workflow.name
                self.nodes, self.edges = list(workflow.nodes or []), list(workflow.edges or [])
                self.config = dict(workflow.configuration or {})
                self.schedule, self.triggers = dict(workflow.schedule or {}), list(workflow.triggers or [])
            elif task.agent_id:
                self.nodes, self.edges, self.config = single_agent_graph(task)
                self.label = f"agent {task.agent_id}"
            else:
                raise RunFailed("BIZ_001", "task has neither a workflow nor an agent")
            rows = (await session.execute(select(models.TaskExecution).where(
                models.TaskExecution.task_id == self.task_id).order_by(models.TaskExecution.started_at))).scalars()
            lost: list[uuid.UUID] = []
            for row in rows:
                key = (row.node_id, row.iteration)
                meta = row.meta or {}
                if row.status == "completed":
                    self.completed[key] = row.output
                    self.tokens += int(meta.get("tokensUsed") or 0)
                    self.cost += float(meta.get("cost") or 0)
                elif row.status == "failed" and meta.get("final"):
                    self.final_failures[key] = {"code": meta.get("code"), "message": row.error}
                elif row.status == "running" and meta.get("wakeAt"):
                    self.parked_rows[key] = (row.id, meta["wakeAt"])
                elif row.status in ("running", "pending"):
                    lost.append(row.id)
            if lost:
                # Attempts whose driver or worker was lost: closed as failed, the node runs again.
                await session.execute(update(models.TaskExecution).where(
                    models.TaskExecution.id.in_(lost), models.TaskExecution.status.in_(("running", "pending")))
                    .values(status="failed", error="run driver lost; attempt abandoned", completed_at=utcnow()))
            tool_ids = {str((n.get("data") or {}).get("toolId")) for n in self.nodes
                        if n.get("type") == "tool" and (n.get("data") or {}).get("toolId")}
            for tid in tool_ids:
                try:
                    tool = await session.get(models.Tool, uuid.UUID(tid))
                except ValueError:
                    tool = None
                if tool is not None:
                    self.tools[tid] = ToolSpec(id=tid, type=tool.type, configuration=tool.configuration or {},
                                               schema=tool.schema or {})
            company_settings: dict[str, Any] = {}
            if task.company_id:
                # One round trip for both: the name labels node tasks, the settings give the retry policy.
                row = (await session.execute(select(models.Company.name, models.Company.settings)
                                             .where(models.Company.id == task.company_id))).first()
                company, company_settings = (row[0], row[1] or {}) if row is not None else (None, {})
                # Ray task names (dashboard, `ray list tasks`): node:<run>:<node>:<iteration>:<attempt> <company>/<workflow>
                self.label = f"{(company or '?')[:40]}/{self.label[:40]}"
        self.ledger.company_id, self.ledger.user_id = self.task.company_id, self.task.created_by
        # The one validator execute used: the workflow may have changed since the run was queued.
        errors = errors_of(validate_graph(self.nodes, self.edges, self.config))
        if errors:
            raise RunFailed("BIZ_001", "; ".join(p.message for p in errors[:5]), errors[0].node_id)
        self.by_id = {n["id"]: n for n in self.nodes}
        self.owners = g.body_nodes(self.nodes, self.edges)
        self.main = [n["id"] for n in self.nodes if n["id"] not in self.owners]
        self.incoming = {nid: [e for e in self.edges if e.get("target") == nid and e.get("source") in self.main]
                         for nid in self.main}
        self.outgoing_error = {e.get("source") for e in self.edges if e.get("type") == "error"}
        self.strategy = self.config.get("strategy", "hybrid")
        self.error_handling = self.config.get("errorHandling", "stop")
        self.policy = _retry_policy(self.config, company_settings)
        state = dict(self.task.run_state or {})
        # Checked at execute too; again here, against the workflow as it is now (defence in depth).
        refused = refused_variables(state.get("variables"), configuration=self.config, schedule=self.schedule,
                                    triggers=self.triggers)
        if refused:
            raise RunFailed("VAL_001", f"variable(s) {', '.join(refused)} may not be overridden by a run: the "
                                       f"workflow does not list them in configuration.{OVERRIDABLE_VARIABLES}")
        self.variables = {**(self.config.get("variables") or {}), **(state.get("variables") or {})}
        try:
            timeout = float(self.config.get("timeout") or DEFAULT_WORKFLOW_TIMEOUT)
        except (TypeError, ValueError):
            raise RunFailed("BIZ_001", f"workflow timeout {self.config.get('timeout')!r} is not a number") from None
        started = self.task.started_at or utcnow()
        # Wall-clock since the run first started, parked delays included.
        self.deadline = time.monotonic() + timeout - (utcnow() - started).total_seconds()

    # ------------------------------------------------------------------ records
    async def commit(self) -> None:
        """Make everything buffered so far durable. Concurrent callers (a wave of parallel
        nodes) share one statement: each waits until a flush that includes its writes is done."""
        self._wanted += 1
        mine = self._wanted
        async with self._commit_lock:
            if self._written >= mine:
                return
            await asyncio.sleep(0)  # let the rest of this wave buffer its writes first
            target = self._wanted
            await self.ledger.flush()
            self._written = target

    # ------------------------------------------------------------------ context
    def context(self, prev: Any = None) -> dict[str, Any]:
        nodes = {nid: {"output": o.output, "status": o.kind} for nid, o in self.outcomes.items()}
        # Secrets stay sealed here; only the node task opens them (troupe.engine.nodes.Secrets).
        return {"input": self.task.input, "vars": self.variables, "nodes": nodes, "prev": prev,
                "loop": dict(self.loop_ctx), "output": prev if isinstance(prev, dict) else {},
                "task": {"id": str(self.task.id), "name": self.task.name},
                "secrets": dict(self.config.get("secrets") or {})}

    def edge_active(self, edge: dict[str, Any]) -> bool | None:
        src = self.outcomes.get(edge["source"])
        if src is None:
            return None
        kind = edge.get("type") or "default"
        if src.kind == "skipped":
            return False
        if src.kind == "failed":
            if kind == "error":
                return True
            return kind in ("default", "success") and self.error_handling == "continue"
        if kind == "error":
            return False
        handle = edge.get("sourceHandle")
        if self.by_id[edge["source"]].get("type") == "condition" and handle in ("true", "false"):
            return templates.edge_condition(handle, {}, src.output)
        if kind == "conditional" or edge.get("condition"):
            try:
                return templates.edge_condition(edge.get("condition"), self.context(src.output), src.output)
            except ValueError as exc:
                raise RunFailed("BIZ_001", str(exc), edge["source"]) from exc
        return True

    # ------------------------------------------------------------------ running
    async def run(self) -> str:
        """Returns the final status: completed, failed, cancelled, paused, parked or fenced."""
        try:
            try:
                await durable(self._load, what=f"run {self.task_id} load")
                return await self._schedule()
            except RunFailed as exc:
                self.control.cancel_nodes()
                return await self._finish("failed", error={"code": exc.code, "message": exc.message,
                                                           "nodeId": exc.node_id})
            except (asyncio.CancelledError, Fenced):
                raise
            except Exception as exc:
                # A bug or an unexpected library error: the run fails with the reason, never stays running.
                log.exception("run %s: driver error", self.task_id)
                self.control.cancel_nodes()
                return await self._finish("failed", error={"code": "SYS_001",
                                                           "message": f"driver error: {type(exc).__name__}: {exc}"})
        except Fenced:
            self.control.cancel_nodes()
            log.warning("run %s: lease epoch %d superseded; this driver stops", self.task_id, self.epoch)
            return "fenced"
        except asyncio.CancelledError:
            self.control.cancel_nodes()
            raise

    async def _schedule(self) -> str:
        inflight: dict[str, asyncio.Task[Outcome]] = {}
        finished: asyncio.Queue[str] = asyncio.Queue()
        parked_at: Any = None
        while True:
            if self.control.cancel_reason:
                return await self._cancel(inflight)
            progressed = True
            while progressed:  # resolve skips until nothing changes
                progressed = False
                for nid in self.main:
                    if nid in self.outcomes or nid in inflight:
                        continue
                    states = [self.edge_active(e) for e in self.incoming[nid]]
                    if states and None not in states and not any(states):
                        self.outcomes[nid] = Outcome("skipped")
                        progressed = True
            holding = self.control.pause_requested or parked_at is not None
            if not holding:
                for nid in self.main:
                    if nid in self.outcomes or nid in inflight:
                        continue
                    if self.strategy == "sequential" and inflight:
                        break
                    states = [self.edge_active(e) for e in self.incoming[nid]]
                    if None in states or (states and not any(states)):
                        continue
                    prev = next((self.outcomes[e["source"]].output for e, s in zip(self.incoming[nid], states,
                                                                                   strict=True) if s), None)
                    fut = inflight[nid] = asyncio.ensure_future(self._run_main_node(nid, prev))
                    fut.add_done_callback(lambda _f, nid=nid: finished.put_nowait(nid))
            if not inflight:
                if parked_at is not None:
                    return await self._park(parked_at)
                if self.control.pause_requested:
                    return await self._pause()
                unresolved = [n for n in self.main if n not in self.outcomes]
                if unresolved:
                    raise RunFailed("BIZ_001", f"nodes {unresolved} can never run (cycle?)")
                return await self._complete()
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                for fut in inflight.values():
                    fut.cancel()
                raise RunFailed("SYS_006", "workflow timeout exceeded")
            # Completions arrive on a queue: O(1) per node, where waiting on every in-flight future
            # again after each completion made a wide wave quadratic.
            try:
                done = [await asyncio.wait_for(finished.get(), timeout=min(remaining, 1.0))]
            except TimeoutError:
                continue
            while not finished.empty():
                done.append(finished.get_nowait())
            for nid in done:
                fut = inflight.pop(nid, None)
                if fut is None:
                    continue
                try:
                    outcome = fut.result()
                except Parked as parked:
                    parked_at = parked.wake_at if parked_at is None else min(parked_at, parked.wake_at)
                    continue
                except asyncio.CancelledError:
                    continue
                except (Fenced, RunFailed):
                    for other in inflight.values():
                        other.cancel()
                    raise
                self.outcomes[nid] = outcome
                if outcome.kind == "failed":
                    if not (self.error_handling == "continue" or nid in self.outgoing_error):
                        for other in inflight.values():
                            other.cancel()
                        self.control.cancel_nodes()
                        err = outcome.error or {}
                        raise RunFailed(err.get("code") or "BIZ_004", err.get("message") or "node failed", nid)
                self._progress(nid)

    async def _run_main_node(self, nid: str, prev: Any) -> Outcome:
        node = self.by_id[nid]
        if node.get("type") == "loop":
            return await self._run_loop(node, prev)
        return await self._run_node(node, 0, prev)

    async def _run_loop(self, node: dict[str, Any], prev: Any) -> Outcome:
        nid = node["id"]
        if (nid, 0) in self.completed:
            return Outcome("ok", self.completed[(nid, 0)])
        cfg = g.config_of(node)
        bound = int(cfg.get("maxIterations") or 0)
        items = _as_items(templates.render(cfg["items"], self.context(prev))) if "items" in cfg else None
        if items is not None and not isinstance(items, list):
            return self._record_driver_node(node, cfg, Outcome(
                "failed", error={"code": "BIZ_001", "message": "loop items did not resolve to a list"}))
        order = g.body_order(node, self.edges)
        results: list[Any] = []
        last = prev
        bound_reached = False
        for index in range(bound + 1):
            if index == bound:
                bound_reached = items is None or len(items) > bound
                break
            if items is not None:
                if index >= len(items):
                    break
                self.loop_ctx = {"index": index, "item": items[index], "last": last}
            else:
                self.loop_ctx = {"index": index, "item": last, "last": last}
                if not templates.evaluate(cfg.get("while") or [], self.context(last)):
                    break
            body_prev = self.loop_ctx["item"]
            for bid in order:
                outcome = await self._run_node(self.by_id[bid], index, body_prev)
                self.outcomes[bid] = outcome
                if outcome.kind == "failed" and self.error_handling != "continue":
                    self.loop_ctx = {}
                    return self._record_driver_node(node, cfg, Outcome("failed", error=outcome.error))
                body_prev = outcome.output
            last = body_prev
            results.append(last)
        self.loop_ctx = {}
        output = {"iterations": len(results), "results": results, "boundReached": bound_reached}
        return self._record_driver_node(node, cfg, Outcome("ok", output))

    def _record_driver_node(self, node: dict[str, Any], cfg: dict[str, Any], outcome: Outcome) -> Outcome:
        """Loop bookkeeping runs in the driver; it is still recorded like any node (with the next commit)."""
        failed = outcome.kind == "failed"
        self.ledger.record(node_id=node["id"], iteration=0, status="failed" if failed else "completed",
                           input_=mask_sealed(_jsonable(cfg)), output=_jsonable(outcome.output),
                           error=(outcome.error or {}).get("message"),
                           meta={"final": True, "code": (outcome.error or {}).get("code")} if failed else {})
        if not failed:
            self.completed[(node["id"], 0)] = outcome.output
        return outcome

    def _retries(self, cfg: dict[str, Any]) -> int:
        if "retries" in cfg:
            return max(0, int(cfg["retries"]))
        if "maxRetries" in self.policy:
            return max(0, int(self.policy["maxRetries"]))
        return 3 if self.error_handling == "retry" else 0

    def _backoff(self, attempt: int) -> float:
        base = float(self.policy.get("initialDelay", 1.0))
        cap = float(self.policy.get("maxDelay", 30.0))
        if self.policy.get("backoffStrategy") == "exponential":
            return min(cap, base * (2 ** attempt))
        return min(cap, base * (attempt + 1))

    def _retryable(self, result: NodeResult) -> bool:
        codes = self.policy.get("retryableErrors") or []
        if codes:
            return result.code in codes
        return result.retryable

    def _spec_for(self, node: dict[str, Any], iteration: int, prev: Any) -> tuple[NodeSpec, dict[str, Any], int]:
        """The node's first attempt, with its rendered configuration and retry count. Raises
        ValueError/TypeError/KeyError for a configuration that renders to something unusable."""
        nid, kind = node["id"], node.get("type") or ""
        raw = g.config_of(node)
        data = node.get("data") or {}
        conditions = data.get("conditions") or raw.get("conditions")
        # The full template context only where something reads it: rendering is O(nodes so far).
        ctx = self.context(prev) if raw or conditions or kind == "condition" else None
        cfg = templates.render(raw, ctx) if raw and ctx is not None else {}
        timeout = cfg.get("timeout")
        try:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float | str | None):
                raise ValueError
            timeout_s = float(timeout) if timeout not in (None, "") else DEFAULT_NODE_TIMEOUT
            if not 0 < timeout_s < float("inf"):
                raise ValueError
        except ValueError:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}") from None
        retries = self._retries(cfg)
        agent_id = data.get("agentId") and str(data.get("agentId"))
        tool_id = data.get("toolId") and str(data.get("toolId"))
        context = ({"input": self.task.input, "prev": prev} if kind != "condition"
                   else _jsonable(ctx))
        spec = NodeSpec(type=kind, node_id=nid, task_id=str(self.task_id), config=cfg, context=context,
                        company_id=str(self.task.company_id) if self.task.company_id else None,
                        iteration=iteration, timeout=timeout_s, agent_id=agent_id, conditions=conditions,
                        idempotency_key=f"{self.task_id}:{nid}:{iteration}" if kind in SIDE_EFFECT_TYPES else None,
                        tool=self.tools.get(tool_id or ""))
        return spec, cfg, retries

    async def _run_node(self, node: dict[str, Any], iteration: int, prev: Any) -> Outcome:
        nid, kind = node["id"], node.get("type")
        key = (nid, iteration)
        if key in self.completed:
            return Outcome("ok", self.completed[key])
        if key in self.final_failures:
            return Outcome("failed", error=self.final_failures[key])
        try:
            spec, cfg, retries = self._spec_for(node, iteration, prev)
            if kind == "delay":
                seconds = delay_seconds(cfg)
                if seconds > PARK_AFTER_SECONDS:
                    return await self._delay_parked(nid, iteration, seconds, cfg)
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            # A configuration that renders to something unusable fails the node, recorded, never the driver.
            message = f"node {nid} has an invalid configuration: {exc}"
            self.ledger.record(node_id=nid, iteration=iteration, status="failed", input_=None, error=message,
                               meta={"final": True, "code": "SYS_001"})
            self.ledger.log("error", message, node_id=nid, details={"iteration": iteration, "code": "SYS_001"})
            return Outcome("failed", error={"code": "SYS_001", "message": message})
        step = (node.get("data") or {}).get("label") or nid
        recorded_input = mask_sealed(_jsonable(cfg))
        tool_id = spec.tool.id if spec.tool else None
        result = NodeResult.fail("SYS_001", "node did not run")
        for attempt in range(retries + 1):
            if self.control.cancel_reason:
                raise asyncio.CancelledError
            spec.attempt = attempt
            started = utcnow()
            exec_id = self.ledger.start(node_id=nid, iteration=iteration, attempt=attempt, input_=recorded_input,
                                        agent_id=spec.agent_id, tool_id=tool_id,
                                        idempotency_key=spec.idempotency_key)
            self.ledger.log("info", f"node {nid} started (attempt {attempt + 1})", node_id=nid,
                            details={"iteration": iteration, "attempt": attempt})
            if attempt == 0:
                self.ledger.progress.setdefault("step", str(step)[:255])
            await self.commit()  # the attempt (and what finished before it) is on disk before it runs
            if kind == "tool" and spec.tool is None:
                result = NodeResult.fail("RES_001", "tool not found", retryable=False)
            else:
                result = await self._submit(spec, min(spec.timeout, max(0.01, self.deadline - time.monotonic())))
            meta = dict(result.meta)
            final = result.ok or attempt >= retries or not self._retryable(result)
            if not result.ok:
                meta.update({"code": result.code, "final": bool(final)})
            meta.setdefault("cacheHit", False)
            duration = int((utcnow() - started).total_seconds() * 1000)
            output = _jsonable(result.output)
            self.ledger.finish(exec_id, status="completed" if result.ok else "failed", output=output,
                               error=None if result.ok else f"{result.code}: {result.message}", meta=meta,
                               started=started)
            if result.ok:
                self.ledger.log("info", f"node {nid} completed", node_id=nid, duration=duration,
                                details={"iteration": iteration, "attempt": attempt,
                                         "tokensUsed": meta.get("tokensUsed")})
            else:
                self.ledger.log("error" if final else "warn", f"node {nid} failed: {result.code} {result.message}",
                                node_id=nid, duration=duration,
                                details={"iteration": iteration, "attempt": attempt, "code": result.code})
            if tool_id is not None:
                self.ledger.tool_call(tool_id=tool_id, ok=result.ok, duration_ms=duration, error=result.message)
            if result.ok:
                self.completed[key] = output
                self.tokens += int(meta.get("tokensUsed") or 0)
                self.cost += float(meta.get("cost") or 0)
                return Outcome("ok", output)
            if final:
                break
            await asyncio.sleep(self._backoff(attempt))
        return Outcome("failed", error=result.as_error())

    async def _submit(self, spec: NodeSpec, limit_s: float) -> NodeResult:
        # TROUPE_NODE_TASK_RESOURCES (JSON, e.g. {"worker": 0.01}) pins node tasks to nodes offering them.
        settings = get_settings()
        resources = settings.node_task_resources
        placement = {"scheduling_strategy": "SPREAD"} if settings.node_task_spread else {}
        agent = f" agent:{spec.agent_id}" if spec.agent_id else ""
        ref = execute_node.options(name=f"node:{self.task_id}:{spec.node_id}:{spec.iteration}:{spec.attempt} "
                                        f"{self.label}{agent}",
                                   num_cpus=WAITING_NODE_CPUS if spec.type in WAITING_TYPES else 1,
                                   **placement, **({"resources": resources} if resources else {})).remote(spec)
        self.control.refs.add(ref)
        try:
            return await asyncio.wait_for(ref, timeout=limit_s)
        except TimeoutError:
            ray.cancel(ref, force=True)
            return NodeResult.fail("SYS_006", f"node timed out after {limit_s:.1f}s")
        except asyncio.CancelledError:
            ray.cancel(ref, force=True)
            raise
        except ray.exceptions.TaskCancelledError:
            raise asyncio.CancelledError from None
        except ray.exceptions.RayError as exc:
            return NodeResult.fail("SYS_001", f"node task lost: {type(exc).__name__}")
        finally:
            self.control.refs.discard(ref)

    async def _delay_parked(self, nid: str, iteration: int, seconds: float, cfg: dict[str, Any]) -> Outcome:
        key = (nid, iteration)
        if key in self.parked_rows:
            exec_id, wake_at = self.parked_rows[key]
        else:
            wake_at = iso(utcnow() + timedelta(seconds=seconds), timespec="microseconds")
            exec_id = self.ledger.start(node_id=nid, iteration=iteration, attempt=0,
                                        input_=mask_sealed(_jsonable(cfg)), meta={"wakeAt": wake_at})
            self.parked_rows[key] = (exec_id, wake_at)
        if iso(utcnow(), timespec="microseconds") < wake_at:  # fixed-width text, as the actor compares it
            raise Parked(wake_at)
        output = {"delayedSeconds": seconds, "parked": True}
        self.ledger.finish(exec_id, status="completed", output=output, meta={"wakeAt": wake_at})
        self.completed[key] = output
        return Outcome("ok", output)

    # ------------------------------------------------------------------ endings
    def _progress(self, nid: str) -> None:
        """Progress lands with the next commit; its event goes out at once (never waiting on Redis)."""
        done = len(self.outcomes)
        total = len(self.main)
        now = utcnow()
        started = self.task.started_at or now
        elapsed = (now - started).total_seconds()
        eta = now + timedelta(seconds=elapsed / done * (total - done)) if done else None
        progress = min(99, int(done * 100 / max(total, 1)))
        label = str((self.by_id[nid].get("data") or {}).get("label") or nid)
        self.ledger.set_progress(progress=progress, step=label, total=total, eta=eta)
        self._pending_event = records.progress_event_args(
            self.task, message=f"{label} {self.outcomes[nid].kind}", tokens=self.tokens, cost=self.cost,
            progress=progress, status="running", step=label, total=total, eta=eta)
        # At most one progress event per PROGRESS_EVENT_SECONDS per run, always the latest state: a
        # 100-node chain would otherwise publish 100 events in a tenth of a second.
        wait = self._last_event + PROGRESS_EVENT_SECONDS - time.monotonic()
        if wait <= 0:
            self._flush_progress()
        elif self._event_timer is None:
            self._event_timer = asyncio.get_running_loop().call_later(wait, self._flush_progress)

    def _flush_progress(self) -> None:
        if self._event_timer is not None:
            self._event_timer.cancel()
            self._event_timer = None
        if self._pending_event is not None:
            records.events.put(*self._pending_event)
            self._pending_event = None
            self._last_event = time.monotonic()

    def _accounting(self, now: Any) -> dict[str, Any]:
        meta = dict(self.task.meta or {})
        created = self.task.queued_at or self.task.created_at or now
        started = self.task.started_at or now
        # Only tokens: runs share actor processes, so per-run cpu/memory would be made up (README).
        meta.update({"cost": round(self.cost, 6), "resourceUsage": {"tokens": self.tokens},
                     "performance": {"queueTime": int(max(0, (started - created).total_seconds()) * 1000),
                                     "executionTime": int((now - started).total_seconds() * 1000),
                                     "totalTime": int((now - created).total_seconds() * 1000)}})
        meta.setdefault("childTasks", [])
        meta.setdefault("source", "api")
        return meta

    def _final_output(self) -> Any:
        outputs = [n for n in self.main if self.by_id[n].get("type") == "output" and
                   self.outcomes.get(n, Outcome("skipped")).kind == "ok"]
        if not outputs:
            sources = {e.get("source") for e in self.edges if e.get("target") in self.main}
            outputs = [n for n in self.main if n not in sources and self.outcomes.get(n, Outcome("x")).kind == "ok"]
        if len(outputs) == 1:
            return self.outcomes[outputs[0]].output
        return {n: self.outcomes[n].output for n in outputs}

    async def _complete(self) -> str:
        return await self._finish("completed", output=_jsonable(self._final_output()))

    async def _finish(self, status: str, *, output: Any = None, error: dict[str, Any] | None = None) -> str:
        self._flush_progress()  # what progressed so far is told before the ending
        now = utcnow()
        if not hasattr(self, "task"):
            # Failed before the run could be loaded: still never left running.
            values: dict[str, Any] = {"status": status, "completed_at": now,
                                      "error": {**(error or {}), "recoverable": True, "retryCount": 0},
                                      "lease_expires_at": None}
            await records.fenced_task_update(self.task_id, self.epoch, **values)
            return status
        level = "info" if status == "completed" else "error"
        self.ledger.log(level, f"task {status}" + (f": {error.get('message')}" if error else ""),
                        details={"error": error} if error else {})
        await self.commit()  # the last completions and the log line land before the run is finished
        meta = self._accounting(now)
        values = {"status": status, "completed_at": now, "meta": meta, "lease_expires_at": None,
                  "execution_time": meta["performance"]["executionTime"],
                  "run_state": {**(self.task.run_state or {}), "parkedUntil": None}}
        if status == "completed":
            values.update(output=output, progress=100, error=None, estimated_completion=None)
        else:
            retry_count = int((self.task.error or {}).get("retryCount", 0)) if isinstance(self.task.error, dict) else 0
            values["error"] = {**(error or {}), "recoverable": status != "cancelled", "retryCount": retry_count}
        # Only a run still running under this driver's lease may finish it (cancel may have won the race).
        task = await records.fenced_task_update(self.task_id, self.epoch, **values)
        if task is None:
            return "cancelled"
        self.task = task
        records.events.put(*records.progress_event_args(task, message=f"task {status}", tokens=self.tokens,
                                                        cost=self.cost))
        # The creator's notice does not hold the run's slot.
        _background(records.notify(task.created_by, level="success" if status == "completed" else "error",
                                   title=f"Task {status}", message=f"{task.name} {status}",
                                   data={"taskId": str(task.id)}))
        if task.workflow_id is not None and status in ("completed", "failed"):
            _background(_start_event_triggers(task))
        return status

    async def _cancel(self, inflight: dict[str, asyncio.Task[Outcome]]) -> str:
        self._flush_progress()  # what progressed so far is told before the ending
        for fut in inflight.values():
            fut.cancel()
        self.control.cancel_nodes()
        await asyncio.gather(*inflight.values(), return_exceptions=True)
        try:
            await self.commit()  # what completed before the cancel stays recorded
        except Fenced:
            pass
        return "cancelled"

    async def _pause(self) -> str:
        self._flush_progress()  # what progressed so far is told before the ending
        self.ledger.log("info", "task paused at a node boundary")
        await self.commit()
        task = await records.fenced_task_update(self.task_id, self.epoch, status="paused", lease_expires_at=None)
        if task is not None:
            await records.progress_event(task, message="paused")
        return "paused"

    async def _park(self, wake_at: Any) -> str:
        self._flush_progress()  # what progressed so far is told before the ending
        self.ledger.log("info", f"run parked until {wake_at} (long delay)")
        await self.commit()
        state = {**(self.task.run_state or {}), "parkedUntil": wake_at}
        # A parked run holds no lease: the CompanyActor re-claims it when it is due.
        await records.fenced_task_update(self.task_id, self.epoch, run_state=state, lease_expires_at=None)
        return "parked"


def _retry_policy(config: dict[str, Any], company_settings: dict[str, Any]) -> dict[str, Any]:
    """The workflow's ``retryPolicy`` (delays in seconds); without one (single-agent tasks,
    workflows that set none) the company's ``settings.retryPolicy`` (delays in milliseconds)."""
    own = config.get("retryPolicy")
    if own:
        return dict(own)
    policy = dict(company_settings.get("retryPolicy") or {})
    for key in ("initialDelay", "maxDelay"):
        if key in policy:
            policy[key] = float(policy[key]) / 1000.0
    return policy


async def _start_event_triggers(task: models.Task) -> None:
    try:
        started = await triggers.on_run_finished(task)
    except Exception:
        log.exception("event triggers after run %s failed", task.id)
        return
    if started:
        # Same company: its actor (this process) admits them on its next scan of queued runs.
        log.info("run %s started %d run(s) through event triggers", task.id, len(started))


_tasks: set[asyncio.Task[Any]] = set()


def _background(coro: Any) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _as_items(value: Any) -> Any:
    """Loop items: a list as is; an agent's output or a text becomes a list too (a JSON
    array in the text, else its non-empty lines), so a loop can iterate over what a model wrote."""
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        value = value["text"]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
        return [line.strip() for line in value.splitlines() if line.strip()]
    return value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if value is not None else None
