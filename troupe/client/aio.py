"""``AsyncClient``: the REST API and the WebSocket, with login and token refresh handled.

Standalone: it needs httpx, websockets, pydantic and rich, never the server's modules.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import httpx

from troupe.client import models
from troupe.client.errors import TroupeError
from troupe.client.watch import BatchFollower

M = TypeVar("M", bound=models.Record)
PAGE_LIMIT = 100  # the API's largest page
RETRIES = 4
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT"})


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camel_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Top-level snake_case keyword arguments to the API's camelCase (nested values are sent as given)."""
    return {camel(k): v for k, v in values.items() if v is not None}


def _token_expiry(token: str) -> float | None:
    """The ``exp`` of a JWT, read without verifying it (only to refresh ahead of time)."""
    try:
        payload = token.split(".")[1]
        return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class Resource(Generic[M]):
    """CRUD of one resource family; ``list`` pages through every match lazily."""

    def __init__(self, client: AsyncClient, path: str, model: type[M]) -> None:
        self._client = client
        self.path = path
        self.model = model

    async def list(self, *, limit: int | None = None, page_size: int = PAGE_LIMIT,
                   **filters: Any) -> AsyncIterator[M]:
        """Every record matching ``filters`` (snake_case or camelCase query parameters), read
        ``page_size`` at a time as the iteration goes; ``limit`` stops after that many."""
        seen = 0
        page = 1
        params = camel_keys(filters)
        while True:
            body = await self._client.request("GET", self.path, params={**params, "page": page,
                                                                          "limit": page_size})
            for row in body.get("data") or []:
                yield self.model.model_validate(row)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            pagination = body.get("pagination") or {}
            if not pagination.get("hasNext"):
                return
            page += 1

    async def all(self, *, limit: int | None = None, **filters: Any) -> list[M]:
        """``list`` gathered into a list."""
        return [row async for row in self.list(limit=limit, **filters)]

    async def get(self, record_id: str) -> M:
        return self.model.model_validate(await self._client.data("GET", f"{self.path}/{record_id}"))

    async def create(self, data: dict[str, Any] | None = None, **fields: Any) -> M:
        return self.model.model_validate(await self._client.data("POST", self.path,
                                                                 json={**(data or {}), **camel_keys(fields)}))

    async def update(self, record_id: str, data: dict[str, Any] | None = None, **fields: Any) -> M:
        return self.model.model_validate(await self._client.data(
            "PUT", f"{self.path}/{record_id}", json={**(data or {}), **camel_keys(fields)}))

    async def delete(self, record_id: str) -> None:
        await self.client_request("DELETE", f"{self.path}/{record_id}")

    async def client_request(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self._client.data(method, path, **kwargs)


class Companies(Resource[models.Company]):
    async def start(self, company_id: str) -> dict[str, Any]:
        return await self.client_request("POST", f"{self.path}/{company_id}/start")

    async def stop(self, company_id: str) -> dict[str, Any]:
        return await self.client_request("POST", f"{self.path}/{company_id}/stop")


class Agents(Resource[models.Agent]):
    async def test(self, agent_id: str, text: str) -> dict[str, Any]:
        return await self.client_request("POST", f"{self.path}/{agent_id}/test", json={"input": text})


class Tools(Resource[models.Tool]):
    async def install(self, tool_id: str, company_id: str) -> dict[str, Any]:
        return await self.client_request("POST", f"{self.path}/{tool_id}/install", json={"companyId": company_id})

    async def test(self, tool_id: str, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002 - the API's name
        return await self.client_request("POST", f"{self.path}/{tool_id}/test", json={"input": input})


class Workflows(Resource[models.Workflow]):
    async def validate(self, workflow_id: str) -> dict[str, Any]:
        return await self.client_request("POST", f"{self.path}/{workflow_id}/validate")

    async def activate(self, workflow_id: str) -> models.Workflow:
        return await self.update(workflow_id, status="active")

    async def execute(self, workflow_id: str, input: Any = None, *,  # noqa: A002 - the API's name
                      variables: dict[str, Any] | None = None, priority: str | None = None) -> models.Task:
        """Start one run (answers at once with the pending task; ``AsyncClient.run`` waits)."""
        return models.Task.model_validate(await self.client_request(
            "POST", f"{self.path}/{workflow_id}/execute",
            json=camel_keys({"input": input, "variables": variables, "priority": priority}) | {"input": input}))


class Tasks(Resource[models.Task]):
    async def execute(self, task_id: str, *, variables: dict[str, Any] | None = None) -> models.Task:
        return models.Task.model_validate(await self.client_request(
            "POST", f"{self.path}/{task_id}/execute", json=camel_keys({"variables": variables})))

    async def cancel(self, task_id: str, reason: str | None = None) -> models.Task:
        return models.Task.model_validate(await self.client_request(
            "POST", f"{self.path}/{task_id}/cancel", json=camel_keys({"reason": reason})))

    async def retry(self, task_id: str, *, from_step: str | None = None) -> models.Task:
        return models.Task.model_validate(await self.client_request(
            "POST", f"{self.path}/{task_id}/retry", json=camel_keys({"from_step": from_step})))

    async def executions(self, task_id: str) -> list[models.Execution]:
        rows: list[models.Execution] = []
        page = 1
        while True:
            body = await self._client.request("GET", f"{self.path}/{task_id}/executions",
                                              params={"page": page, "limit": PAGE_LIMIT})
            rows += [models.Execution.model_validate(r) for r in body.get("data") or []]
            if not (body.get("pagination") or {}).get("hasNext"):
                return rows
            page += 1

    async def batch(self, items: Sequence[dict[str, Any]], *, execute: bool = False,
                    variables: dict[str, Any] | None = None) -> list[models.Task]:
        """Create (and with ``execute`` start) tasks in one all-or-nothing request; the tasks come back
        in the order of ``items``."""
        body: dict[str, Any] = {"tasks": list(items)}
        if execute:
            body["execute"] = True
        if variables is not None:
            body["variables"] = variables
        data = await self.client_request("POST", f"{self.path}/batch", json=body)
        return [models.Task.model_validate(t) for t in data["tasks"]]


class Files(Resource[models.File]):
    async def upload(self, content: bytes, filename: str, *, company_id: str | None = None,
                     private: bool = True, content_type: str = "application/octet-stream") -> models.File:
        form = camel_keys({"company_id": company_id}) | {"private": "true" if private else "false"}
        return models.File.model_validate(await self.client_request(
            "POST", f"{self.path}/upload", files={"file": (filename, content, content_type)}, data=form))

    async def download(self, file_id: str) -> bytes:
        response = await self._client.raw("GET", f"{self.path}/{file_id}/download")
        return response.content

    async def create(self, data: dict[str, Any] | None = None, **fields: Any) -> models.File:
        raise TypeError("files are created with upload(content, filename)")


class AsyncClient:
    """``async with AsyncClient(url, email=..., password=...) as troupe: ...`` (or ``token=...``).

    An expired access token is refreshed through ``/api/auth/refresh`` (or by logging in again
    when the client holds the password) and the request is retried once. API errors raise
    ``TroupeError``."""

    def __init__(self, base_url: str, *, email: str | None = None, password: str | None = None,
                 token: str | None = None, refresh_token: str | None = None, timeout: float = 60.0,
                 on_tokens: Callable[[str, str | None], None] | None = None) -> None:
        if token is None and (email is None or password is None):
            raise ValueError("give email and password, or token")
        self.base_url = base_url.rstrip("/")
        self.email, self._password = email, password
        self.token, self.refresh_token = token, refresh_token
        self._on_tokens = on_tokens  # told about every new pair (the CLI saves them)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                       limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))
        self._refresh_lock = asyncio.Lock()
        self.companies = Companies(self, "/api/companies", models.Company)
        self.agents = Agents(self, "/api/agents", models.Agent)
        self.tools = Tools(self, "/api/tools", models.Tool)
        self.workflows = Workflows(self, "/api/workflows", models.Workflow)
        self.tasks = Tasks(self, "/api/tasks", models.Task)
        self.files = Files(self, "/api/files", models.File)

    async def __aenter__(self) -> AsyncClient:
        if self.token is None:
            await self.login()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- authentication ---------------------------------------------------------------------------

    async def login(self, email: str | None = None, password: str | None = None) -> models.User:
        self.email = email or self.email
        self._password = password or self._password
        if not self.email or not self._password:
            raise TroupeError("AUTH_001", "No credentials to log in with", status=401)
        data = await self._send("POST", "/api/auth/login", json={"email": self.email, "password": self._password},
                                auth=False)
        self._set_tokens(data["token"], data.get("refreshToken"))
        return models.User.model_validate(data["user"])

    def _set_tokens(self, token: str, refresh: str | None) -> None:
        self.token, self.refresh_token = token, refresh or self.refresh_token
        if self._on_tokens is not None:
            self._on_tokens(self.token, self.refresh_token)

    async def refresh(self, stale: str | None = None) -> None:
        """New tokens: rotate the refresh token, else log in again. Concurrent callers that saw the
        same stale token share one refresh."""
        async with self._refresh_lock:
            if stale is not None and self.token != stale:
                return  # someone else refreshed meanwhile
            if self.refresh_token:
                try:
                    data = await self._send("POST", "/api/auth/refresh", json={"refreshToken": self.refresh_token},
                                            auth=False)
                    self._set_tokens(data["token"], data["refreshToken"])
                    return
                except TroupeError as exc:
                    if not exc.is_auth or not self._password:
                        raise
            if self._password:
                await self.login()
                return
            raise TroupeError("AUTH_003", "The access token expired and there is no way to refresh it "
                              "(give a refresh_token or email and password)", status=401)

    async def fresh_token(self) -> str:
        """A token valid for at least another 30 s (the WebSocket is checked at its handshake)."""
        expiry = _token_expiry(self.token or "")
        if expiry is not None and expiry - time.time() < 30 and (self.refresh_token or self._password):
            await self.refresh(self.token)
        assert self.token is not None
        return self.token

    async def me(self) -> models.User:
        return models.User.model_validate(await self.data("GET", "/api/users/me"))

    # -- requests ---------------------------------------------------------------------------------

    async def raw(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
        """One request. An expired token is refreshed and the request retried once; a refusal for
        rate (429) and, for reads, an unavailable service (502-504) or a lost connection are
        retried with backoff (``Retry-After`` when given)."""
        refreshed = False
        if auth and self.token is None:  # not entered with `async with`: log in on first use
            async with self._refresh_lock:
                if self.token is None:
                    await self.login()
        for attempt in range(RETRIES + 1):
            sent_with = self.token
            headers = {"Authorization": f"Bearer {sent_with}"} if auth and sent_with else {}
            last = attempt == RETRIES
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                if method in IDEMPOTENT and not last:
                    await asyncio.sleep(0.5 * 2**attempt)
                    continue
                raise TroupeError("SYS_007", f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
            if response.status_code < 400:
                return response
            error = _error_of(response)
            if (auth and not refreshed and response.status_code == 401 and error.code in ("AUTH_003", "AUTH_002")
                    and (self.refresh_token or self._password)):
                refreshed = True
                await self.refresh(sent_with)
                continue
            # A 5xx without our envelope comes from the serving layer (a replica lost with its node
            # answers Serve's plain 500): worth a retry for reads, like 502-504.
            unavailable = response.status_code in (502, 503, 504) or (
                response.status_code >= 500 and not _is_envelope(response))
            transient = response.status_code == 429 or (unavailable and method in IDEMPOTENT)
            if transient and not last:
                await asyncio.sleep(_retry_after(response, 0.5 * 2**attempt))
                continue
            raise error
        raise AssertionError("unreachable")

    async def _send(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        response = await self.raw(method, path, auth=auth, **kwargs)
        return response.json().get("data") if response.content else None

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The whole envelope (``data``, ``pagination``, ``meta``)."""
        response = await self.raw(method, path, **kwargs)
        return response.json() if response.content else {}

    async def data(self, method: str, path: str, **kwargs: Any) -> Any:
        """The envelope's ``data``."""
        return await self._send(method, path, **kwargs)

    # -- runs -------------------------------------------------------------------------------------

    async def run_batch(self, workflow_id: str, inputs: Iterable[Any], *, chunk_size: int = 500,
                        progress: bool = True, timeout: float | None = None,  # noqa: ASYNC109 - reported per item
                        priority: str = "medium",
                        variables: dict[str, Any] | None = None) -> list[models.ItemResult]:
        """Run ``workflow_id`` once per input and wait for all: one result per input, in input order,
        each with ``task_id``, ``status``, ``output`` and ``error``. A failed item does not raise.
        Inputs are submitted ``chunk_size`` at a time through ``POST /api/tasks/batch`` with
        ``execute: true``; completion is followed over the WebSocket (``task:progress`` in the company's
        room) with polling as the fallback. A progress bar is drawn on stderr when ``progress`` is true
        and stderr is a terminal. ``timeout`` (seconds) bounds the wait: items still unfinished then
        keep their last status and get a ``SYS_006`` error."""
        if not 1 <= chunk_size <= 1000:
            raise ValueError("chunk_size must be between 1 and 1000 (the API's batch limit)")
        items = list(inputs)
        workflow = await self.workflows.get(workflow_id)
        if workflow.company_id is None:
            raise TroupeError("VAL_001", "The workflow belongs to no company", field="workflowId", status=422)
        follower = BatchFollower(self, company_id=workflow.company_id, total=len(items), progress=progress,
                                 label=workflow.name)
        async with follower:
            for start in range(0, len(items), chunk_size):
                chunk = items[start:start + chunk_size]
                tasks = await self._submit(workflow, chunk, start, priority=priority, variables=variables)
                follower.add([t.id for t in tasks], [t.created_at for t in tasks], workflow_id=workflow.id)
            return await follower.wait(bound=timeout, inputs=items)

    async def _submit(self, workflow: models.Workflow, chunk: list[Any], offset: int, *, priority: str,
                      variables: dict[str, Any] | None) -> list[models.Task]:
        body = [{"name": f"{workflow.name[:200]} #{offset + i}", "type": "workflow", "companyId": workflow.company_id,
                 "workflowId": workflow.id, "input": value, "priority": priority} for i, value in enumerate(chunk)]
        try:
            return await self.tasks.batch(body, execute=True, variables=variables)
        except TroupeError as exc:
            if exc.code == "VAL_008" and len(chunk) > 1:  # the request body is over the server's limit: halve it
                half = len(chunk) // 2
                first = await self._submit(workflow, chunk[:half], offset, priority=priority, variables=variables)
                return first + await self._submit(workflow, chunk[half:], offset + half, priority=priority,
                                                  variables=variables)
            raise

    async def run(self, workflow_id: str, input: Any = None, *,  # noqa: A002 - the API's name
                  timeout: float | None = None,  # noqa: ASYNC109 - reported in the result, not raised
                  variables: dict[str, Any] | None = None,
                  on_progress: Callable[[dict[str, Any]], None] | None = None) -> models.ItemResult:
        """Run ``workflow_id`` once and wait for it. ``on_progress`` gets each ``task:progress``
        payload of the run as it arrives."""
        workflow = await self.workflows.get(workflow_id)
        if workflow.company_id is None:
            raise TroupeError("VAL_001", "The workflow belongs to no company", field="workflowId", status=422)
        follower = BatchFollower(self, company_id=workflow.company_id, total=1, progress=False,
                                 label=workflow.name, on_progress=on_progress)
        async with follower:
            task = await self.workflows.execute(workflow.id, input, variables=variables)
            follower.add([task.id], [task.created_at], workflow_id=workflow.id)
            return (await follower.wait(bound=timeout, inputs=[input]))[0]


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(max(float(response.headers.get("retry-after", default)), 0.1), 30.0)
    except ValueError:
        return default


def _is_envelope(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "success" in body


def _error_of(response: httpx.Response) -> TroupeError:
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    request_id = response.headers.get("x-request-id")
    if isinstance(error, dict) and error.get("code"):
        return TroupeError(str(error["code"]), str(error.get("message") or ""), field=error.get("field"),
                           status=response.status_code, details=error.get("details"), request_id=request_id)
    return TroupeError("SYS_001" if response.status_code >= 500 else "VAL_001",
                       f"HTTP {response.status_code}: {response.text[:200]}", status=response.status_code,
                       request_id=request_id)
