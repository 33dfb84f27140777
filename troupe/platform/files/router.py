"""File routes (spec: 文件管理). Uploads are parsed as streams, so their
multipart bodies are described in the OpenAPI by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute

from troupe.config import get_settings
from troupe.errors import AppError, ErrorCode
from troupe.platform.deps import CurrentUser, DbSession
from troupe.platform.files import service
from troupe.platform.files.download import file_response
from troupe.platform.files.schemas import (
    FILE_TYPE_PATTERN,
    BatchDelete,
    BatchResult,
    ChunkReceived,
    CompleteUpload,
    FileInfo,
    FileListParams,
    FileUpdate,
    ShareCreate,
    SharedFileInfo,
    ShareRead,
    StorageUsage,
)
from troupe.platform.schemas import Envelope, Message, ok

router = APIRouter(prefix="/api/files", tags=["files"])


class BoundedJsonRoute(APIRoute):
    """The app's body-size limit skips every ``/api/files/upload*`` path, which
    includes the JSON ``upload/complete``: this restores the general limit there."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def bounded(request: Request):
            limit = get_settings().max_body_bytes
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise AppError(ErrorCode.FILE_TOO_LARGE, f"Request body exceeds {limit} bytes")
            body = bytearray()
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limit:
                    raise AppError(ErrorCode.FILE_TOO_LARGE, f"Request body exceeds {limit} bytes")
            request._body = bytes(body)  # Starlette serves request.body() from this cache
            return await handler(request)

        return bounded

# The bytes go out with the file's own media type (text/plain, image/png, ...).
_BINARY = {"content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
           "description": "The file's bytes, in its own media type (206 with Content-Range for a byte range)"}


def _multipart(properties: dict, required: list[str]) -> dict:
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}}


_UPLOAD_BODY = _multipart({
    "file": {"type": "string", "format": "binary"},
    "type": {"type": "string", "maxLength": 50, "pattern": FILE_TYPE_PATTERN,
             "description": "Your type (avatar, document, image, ...), answered as `type` and filtered by "
                            "GET /api/files?type=; without it, the kind sniffed from the content"},
    "metadata": {"type": "string", "description": "JSON object"},
    "companyId": {"type": "string", "format": "uuid", "description": "A company you may write"},
    "private": {"type": "boolean", "default": False,
                "description": "Only the uploader (and the file's company) may read it; otherwise also the "
                               "uploader's teammates, for a file of no company"},
    "tags": {"type": "string", "description": "Repeated field, comma-separated list or JSON array"},
}, ["file"])
_CHUNK_BODY = _multipart({
    "chunk": {"type": "string", "format": "binary"},
    "chunkIndex": {"type": "integer", "minimum": 0},
    "totalChunks": {"type": "integer", "minimum": 1, "maximum": service.MAX_CHUNKS},
    "fileId": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$",
               "description": "Upload id; omit on the first chunk to have one assigned"},
    "filename": {"type": "string", "description": "Required with the first chunk"},
}, ["chunk", "chunkIndex", "totalChunks"])


def _base(request: Request) -> str:
    return (get_settings().api_base_url or str(request.base_url)).rstrip("/")


@router.post("/upload", response_model=Envelope[FileInfo], status_code=201, openapi_extra=_UPLOAD_BODY)
async def upload_file(request: Request, session: DbSession, user: CurrentUser):
    return ok(await service.upload(session=session, user=user, request=request,
                                   base=get_settings().api_base_url or ""))


@router.post("/upload/chunk", response_model=Envelope[ChunkReceived], status_code=201, openapi_extra=_CHUNK_BODY)
async def upload_chunk(request: Request, session: DbSession, user: CurrentUser):
    return ok(await service.upload_chunk(session=session, user=user, request=request))


async def complete_upload(body: CompleteUpload, session: DbSession, user: CurrentUser):
    return ok(await service.complete_upload(session=session, user=user, data=body,
                                            base=get_settings().api_base_url or ""))


router.add_api_route("/upload/complete", complete_upload, methods=["POST"], response_model=Envelope[FileInfo],
                     status_code=201, route_class_override=BoundedJsonRoute)


@router.get("", response_model=Envelope[list[FileInfo]])
async def list_files(session: DbSession, user: CurrentUser, params: Annotated[FileListParams, Query()]):
    items, pagination = await service.list_files(session=session, user=user, params=params)
    return ok(items, pagination=pagination)


@router.get("/storage/usage", response_model=Envelope[StorageUsage])
async def storage_usage(session: DbSession, user: CurrentUser):
    return ok(await service.usage(session=session, user=user))


@router.post("/batch/delete", response_model=Envelope[BatchResult])
async def batch_delete(body: BatchDelete, session: DbSession, user: CurrentUser):
    return ok(await service.batch_delete(session=session, user=user, data=body))


@router.get("/shared/{share_id}", response_model=Envelope[SharedFileInfo], responses={200: _BINARY})
async def open_share(share_id: str, session: DbSession,
                     password: Annotated[str | None, Query(max_length=128)] = None,
                     x_share_password: Annotated[str | None, Header(max_length=128)] = None,
                     info: Annotated[bool, Query(description="Describe the file instead of sending it")] = False,
                     inline: Annotated[bool, Query(description="Show in the browser (needs allowPreview)")] = False):
    """Public. By default sends the file as an attachment when the link allows
    downloads, else inline when it allows previews; ``info=true`` describes it."""
    share, file, count = await service.open_share(session=session, share_id=share_id,
                                                  password=x_share_password or password)
    if info:
        return ok(service.shared_info(share, file, count))
    as_inline = inline or not share.allow_download
    if (as_inline and not share.allow_preview) or (not as_inline and not share.allow_download):
        raise AppError(ErrorCode.INSUFFICIENT_PERMISSIONS, "This link does not allow that")
    return await file_response(file, inline=as_inline, range_header=None)


@router.get("/{file_id}", response_model=Envelope[FileInfo])
async def get_file(file_id: str, session: DbSession, user: CurrentUser):
    return ok(FileInfo.model_validate(await service.get_file(session=session, user=user, file_id=file_id)))


@router.put("/{file_id}", response_model=Envelope[FileInfo])
async def update_file(file_id: str, body: FileUpdate, session: DbSession, user: CurrentUser):
    result = await service.update_file(session=session, user=user, file_id=file_id, data=body)
    await session.commit()  # durable before the client hears about it
    return ok(result)


@router.delete("/{file_id}", response_model=Envelope[Message])
async def delete_file(file_id: str, session: DbSession, user: CurrentUser):
    await service.delete_file(session=session, user=user, file_id=file_id)
    return ok(Message(message="File deleted"))


@router.get("/{file_id}/download", response_class=StreamingResponse, responses={200: _BINARY, 206: _BINARY})
async def download_file(file_id: str, request: Request, session: DbSession, user: CurrentUser,
                        inline: Annotated[bool, Query()] = False,
                        thumbnail: Annotated[bool, Query(description="Thumbnails are not generated (no image library is installed): 404")] = False):
    file = await service.get_file(session=session, user=user, file_id=file_id)
    if thumbnail:
        raise AppError(ErrorCode.RESOURCE_NOT_FOUND, "This file has no thumbnail")
    return await file_response(file, inline=inline, range_header=request.headers.get("range"))


@router.post("/{file_id}/share", response_model=Envelope[ShareRead], status_code=201)
async def share_file(file_id: str, body: ShareCreate, request: Request, session: DbSession, user: CurrentUser):
    result = await service.create_share(session=session, user=user, file_id=file_id, data=body,
                                        base=_base(request))
    await session.commit()  # durable before the client hears about it
    return ok(result)
