"""``troupe``: the command line over ``troupe.client``.

    troupe login --url http://127.0.0.1:8000 --email ada@example.com
    troupe companies list
    troupe workflows run WORKFLOW_ID --input input.json --watch
    troupe tasks batch --workflow WORKFLOW_ID inputs.jsonl --out results.jsonl

Exit codes: 0 when everything succeeded, 1 when some run or item failed (or the server failed),
2 on a usage or authentication error (bad arguments or input file, not logged in, refused).
The token is kept in ``$TROUPE_CONFIG`` (default ``~/.config/troupe/config.json``, mode 600).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from troupe.client import Client, TroupeError
from troupe.client.models import ItemResult, Record

DEFAULT_URL = "http://127.0.0.1:8000"
OK, FAILED, USAGE = 0, 1, 2

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Troupe from the command line: log in, list, run workflows, run batches.")
companies_app = typer.Typer(no_args_is_help=True, help="Companies you can see.")
agents_app = typer.Typer(no_args_is_help=True, help="Agents.")
workflows_app = typer.Typer(no_args_is_help=True, help="Workflows: list, run.")
tasks_app = typer.Typer(no_args_is_help=True, help="Tasks: list, run a batch.")
app.add_typer(companies_app, name="companies")
app.add_typer(agents_app, name="agents")
app.add_typer(workflows_app, name="workflows")
app.add_typer(tasks_app, name="tasks")

Url = Annotated[str | None, typer.Option("--url", envvar="TROUPE_URL",
                                         help="API base URL (default: the one you logged in to)")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout")]
Limit = Annotated[int, typer.Option("--limit", min=1, help="At most this many rows")]
Company = Annotated[str | None, typer.Option("--company", help="Only this company's")]


# -- configuration ----------------------------------------------------------------------------------

def config_path() -> Path:
    if os.environ.get("TROUPE_CONFIG"):
        return Path(os.environ["TROUPE_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "troupe" / "config.json"


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        fail(f"cannot read {path}: {exc}", USAGE)


def save_config(config: dict[str, Any]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Written private and then renamed into place: it holds the session's tokens.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(config, out, indent=2)
    os.replace(tmp, path)


# -- output -----------------------------------------------------------------------------------------

def fail(message: str, code: int, *, as_json: bool = False, error: TroupeError | None = None) -> NoReturn:
    if as_json:
        body: dict[str, Any] = {"message": message}
        if error is not None:
            body = {"code": error.code, "message": error.message, "field": error.field, "status": error.status}
        print(json.dumps({"error": body}), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def error_exit(error: TroupeError, as_json: bool) -> NoReturn:
    # Refusals of the caller (auth, validation, not found) are usage errors; the server failing is not.
    code = USAGE if error.is_auth or 400 <= error.status < 500 else FAILED
    fail(str(error), code, as_json=as_json, error=error)


def emit_json(value: Any) -> None:
    print(json.dumps(value, default=str, ensure_ascii=False))


def connect(url: str | None, as_json: bool) -> Client:
    config = load_config()
    if not config.get("token"):
        fail(f"not logged in: run `troupe login` (config {config_path()})", USAGE, as_json=as_json)

    def keep(token: str, refresh: str | None) -> None:  # a rotated refresh token retires the old one
        save_config({**load_config(), "token": token, "refreshToken": refresh})

    try:
        return Client(url or config.get("url") or DEFAULT_URL, token=config["token"],
                      refresh_token=config.get("refreshToken"), on_tokens=keep)
    except TroupeError as exc:
        error_exit(exc, as_json)


def guarded(as_json: bool, body: Callable[[], int]) -> None:
    try:
        code = body()
    except TroupeError as exc:
        error_exit(exc, as_json)
    raise typer.Exit(code)


def table(rows: Iterable[Record], columns: list[str], as_json: bool, limit: int) -> int:
    records = []
    for row in rows:
        records.append(row)
        if len(records) >= limit:
            break
    if as_json:
        emit_json([r.to_dict() for r in records])
        return OK
    values = [[str(r.to_dict().get(c) if r.to_dict().get(c) is not None else "-") for c in columns] for r in records]
    widths = [max([len(c)] + [len(v[i]) for v in values]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for v in values:
        print("  ".join(x.ljust(w) for x, w in zip(v, widths, strict=True)).rstrip())
    return OK


# -- commands ---------------------------------------------------------------------------------------

@app.command()
def login(email: Annotated[str, typer.Option(prompt=True, envvar="TROUPE_EMAIL")],
          password: Annotated[str, typer.Option(prompt=True, hide_input=True, envvar="TROUPE_PASSWORD")],
          url: Url = None, as_json: Json = False) -> None:
    """Log in and keep the session's tokens in the config file."""
    base = url or load_config().get("url") or DEFAULT_URL
    try:
        with Client(base, email=email, password=password) as client:
            me = client.me()
            save_config({"url": base, "email": me.email, "token": client.token,
                         "refreshToken": client.refresh_token})
    except TroupeError as exc:
        error_exit(exc, as_json)
    if as_json:
        emit_json({"url": base, "email": me.email, "userId": me.id, "config": str(config_path())})
    else:
        print(f"Logged in to {base} as {me.email} (tokens in {config_path()})")


@companies_app.command("list")
def companies_list(url: Url = None, limit: Limit = 100, search: str | None = None, as_json: Json = False) -> None:
    """Companies you can see."""
    with connect(url, as_json) as client:
        guarded(as_json, lambda: table(client.companies.list(search=search, limit=limit),
                                       ["id", "name", "type", "status"], as_json, limit))


@agents_app.command("list")
def agents_list(url: Url = None, company: Company = None, limit: Limit = 100, as_json: Json = False) -> None:
    """Agents you can see."""
    with connect(url, as_json) as client:
        guarded(as_json, lambda: table(client.agents.list(company_id=company, limit=limit),
                                       ["id", "name", "provider", "model", "status"], as_json, limit))


@workflows_app.command("list")
def workflows_list(url: Url = None, company: Company = None, status: str | None = None, limit: Limit = 100,
                   as_json: Json = False) -> None:
    """Workflows you can see."""
    with connect(url, as_json) as client:
        guarded(as_json, lambda: table(client.workflows.list(company_id=company, status=status, limit=limit),
                                       ["id", "name", "status", "companyId"], as_json, limit))


@tasks_app.command("list")
def tasks_list(url: Url = None, company: Company = None,
               workflow: Annotated[str | None, typer.Option(help="Only this workflow's")] = None,
               status: str | None = None, limit: Limit = 50, as_json: Json = False) -> None:
    """Tasks, newest first."""
    with connect(url, as_json) as client:
        guarded(as_json, lambda: table(client.tasks.list(company_id=company, workflow_id=workflow, status=status,
                                                         limit=limit),
                                       ["id", "name", "status", "progress", "createdAt"], as_json, limit))


def read_json_file(path: Path, as_json: bool) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        return json.loads(text)
    except (OSError, ValueError) as exc:
        fail(f"cannot read JSON from {path}: {exc}", USAGE, as_json=as_json)


@workflows_app.command("run")
def workflows_run(workflow_id: Annotated[str, typer.Argument(help="The workflow to run")],
                  input_file: Annotated[Path | None, typer.Option("--input", help="JSON file with the run's input "
                                                                  "(- for stdin)")] = None,
                  watch: Annotated[bool, typer.Option("--watch", help="Print node progress as it happens")] = False,
                  timeout: Annotated[float | None, typer.Option(help="Seconds to wait at most")] = None,
                  url: Url = None, as_json: Json = False) -> None:
    """Run a workflow once and wait for its result (exit 1 if the run did not complete)."""
    value = read_json_file(input_file, as_json) if input_file is not None else None

    def show(event: dict[str, Any]) -> None:
        line = {"progress": event.get("progress"), "status": event.get("status"),
                "step": event.get("currentStep"), "message": event.get("message")}
        if as_json:
            print(json.dumps({"event": "task:progress", **line}), file=sys.stderr, flush=True)
        else:
            print(f"[{float(line['progress'] or 0):5.1f}%] {line['status']:<9} {line['step'] or '-'}"
                  + (f"  {line['message']}" if line["message"] else ""), file=sys.stderr, flush=True)

    def body() -> int:
        result = client.run(workflow_id, value, timeout=timeout, on_progress=show if watch else None)
        if as_json:
            emit_json(result.to_dict())
        else:
            print(f"{result.status} {result.task_id}")
            print(json.dumps(result.error if not result.ok else result.output, indent=2, default=str))
        return OK if result.ok else FAILED

    with connect(url, as_json) as client:
        guarded(as_json, body)


def read_inputs(path: Path, as_json: bool) -> list[Any]:
    try:
        handle = sys.stdin if str(path) == "-" else path.open()
        with handle:
            lines = list(handle)
    except OSError as exc:
        fail(f"cannot read {path}: {exc}", USAGE, as_json=as_json)
    values = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except ValueError as exc:
            fail(f"{path} line {number}: not JSON ({exc})", USAGE, as_json=as_json)
    if not values:
        fail(f"{path} holds no inputs (one JSON value per line)", USAGE, as_json=as_json)
    return values


def summary_of(results: list[ItemResult], seconds: float) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return {"total": len(results), "completed": counts.get("completed", 0), "failed": counts.get("failed", 0),
            "cancelled": counts.get("cancelled", 0),
            "unfinished": len(results) - sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled")),
            "seconds": round(seconds, 1)}


@tasks_app.command("batch")
def tasks_batch(inputs_file: Annotated[Path, typer.Argument(help="JSON Lines: one run input per line (- for stdin)")],
                workflow: Annotated[str, typer.Option("--workflow", help="The workflow to run for each input")],
                out: Annotated[Path | None, typer.Option(help="Write one result per line here, in input "
                                                         "order")] = None,
                chunk_size: Annotated[int, typer.Option(min=1, max=1000, help="Inputs per batch request")] = 500,
                timeout: Annotated[float | None, typer.Option(help="Seconds to wait at most")] = None,
                progress: Annotated[bool, typer.Option(help="Progress bar (drawn only on a terminal)")] = True,
                url: Url = None, as_json: Json = False) -> None:
    """Run a workflow once per input line and wait for all (exit 1 if any item failed)."""
    values = read_inputs(inputs_file, as_json)

    def body() -> int:
        started = time.monotonic()
        results = client.run_batch(workflow, values, chunk_size=chunk_size, progress=progress and not as_json,
                                   timeout=timeout)
        summary = summary_of(results, time.monotonic() - started)
        if out is not None:
            with out.open("w") as handle:
                for r in results:
                    handle.write(json.dumps(r.to_dict(), default=str, ensure_ascii=False) + "\n")
        if as_json:
            emit_json({"summary": summary, **({"out": str(out)} if out is not None
                                              else {"results": [r.to_dict() for r in results]})})
        else:
            if out is None:
                for r in results:
                    detail = (json.dumps(r.output, default=str) if r.ok
                              else f"{(r.error or {}).get('code', '-')}: {(r.error or {}).get('message', '')}")
                    print(f"{r.index}\t{r.status}\t{r.task_id}\t{detail}")
            print(f"{summary['total']} items: {summary['completed']} completed, {summary['failed']} failed, "
                  f"{summary['cancelled']} cancelled, {summary['unfinished']} unfinished in {summary['seconds']} s"
                  + (f"; results in {out}" if out is not None else ""))
        return OK if summary["completed"] == summary["total"] else FAILED

    with connect(url, as_json) as client:
        guarded(as_json, body)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
