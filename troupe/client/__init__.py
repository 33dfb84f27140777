"""Python client of the Troupe API: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    from troupe.client import Client
    with Client("http://127.0.0.1:8000", email="ada@example.com", password="...") as troupe:
        results = troupe.run_batch(workflow_id, [{"text": t} for t in texts])

Importable on its own: it uses httpx, websockets, pydantic and rich, none of the server's modules.
"""

from troupe.client.aio import AsyncClient
from troupe.client.errors import TroupeError
from troupe.client.models import (
    Agent,
    Company,
    Execution,
    File,
    ItemResult,
    Task,
    Tool,
    User,
    Workflow,
)
from troupe.client.sync import Client

__all__ = ["Agent", "AsyncClient", "Client", "Company", "Execution", "File", "ItemResult", "Task", "Tool",
           "TroupeError", "User", "Workflow"]
