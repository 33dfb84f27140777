"""Request and response models of the files routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, ConfigDict, Field, field_validator, model_validator

from troupe.platform.schemas import CamelModel, PageParams, RoundTripInput, StrictInput, UtcDateTime

FileType = Literal["image", "document", "audio", "video", "archive", "other"]
FILE_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$"
# The constraints come before the lower-casing so that the document shows them (pattern included).
FileCategory = Annotated[str, Field(
    max_length=50, pattern=FILE_TYPE_PATTERN,
    description="The client's type (avatar, document, image, video, audio, ...); case-insensitive. "
                "An upload without one gets the kind sniffed from its content: " + "|".join(FileType.__args__)),
    AfterValidator(str.lower)]


class FileInfo(CamelModel):
    id: uuid.UUID
    filename: str
    original_name: str
    mime_type: str
    size: int
    type: str = Field(description="The type given at upload (e.g. avatar), else the kind sniffed from the content "
                                  "(" + "|".join(FileType.__args__) + ")")
    url: str
    thumbnail_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("meta", "metadata"))
    tags: list[str] = Field(default_factory=list)
    uploaded_by: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    private: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @field_validator("metadata", "tags", mode="before")
    @classmethod
    def _none_empty(cls, value: Any, info) -> Any:
        if value is None:
            return {} if info.field_name == "metadata" else []
        return value


class ChunkReceived(CamelModel):
    file_id: str = Field(description="Upload id: send it with every chunk and to /upload/complete")
    chunk_index: int
    total_chunks: int
    received_chunks: int
    received_bytes: int
    expires_at: datetime


class CompleteUpload(StrictInput):
    file_id: str = Field(min_length=1, max_length=64, validation_alias=AliasChoices("fileId", "uploadId", "file_id"))
    total_chunks: int = Field(ge=1, le=10_000)
    metadata: dict[str, Any] | None = None
    checksum: str | None = Field(None, pattern=r"^(sha256:)?[0-9a-fA-F]{64}$",
                                 description="SHA-256 of the whole file (hex, optionally 'sha256:'-prefixed)")
    company_id: uuid.UUID | None = None
    private: bool = Field(False, description="Only the uploader (and its company, for a company file) may read it")
    type: FileCategory | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(default_factory=list, max_length=20)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return _clean_tags(value)


class FileListParams(PageParams):
    type: FileCategory | None = None
    company_id: uuid.UUID | None = None
    private: bool | None = None
    tags: str | None = Field(None, max_length=500, description="Comma-separated; files having all of them")
    mine: bool | None = Field(None, description="Only files I uploaded")
    sort: Literal["createdAt", "filename", "size", "type"] | None = None


class FileUpdate(RoundTripInput):
    """The whole GET answer may be sent back: its server-owned fields are ignored."""

    read_models = ("FileInfo",)

    filename: str | None = Field(None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    private: bool | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=50)]] | None = Field(None, max_length=20)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _clean_tags(value)


class ShareCreate(StrictInput):
    # _one_expiry, declared.
    model_config = ConfigDict(json_schema_extra={"not": {
        "required": ["expiresAt", "expiresIn"],
        "properties": {"expiresAt": {"type": "string"}, "expiresIn": {"type": "integer"}}}})

    expires_at: UtcDateTime | None = None
    expires_in: int | None = Field(None, ge=60, le=365 * 86400, description="Seconds from now")
    password: str | None = Field(None, min_length=4, max_length=128)
    allow_download: bool = True
    allow_preview: bool = True

    @model_validator(mode="after")
    def _one_expiry(self) -> ShareCreate:
        if self.expires_at is not None and self.expires_in is not None:
            raise ValueError("Give expiresAt or expiresIn, not both")
        return self


class ShareRead(CamelModel):
    share_id: str
    share_url: str
    expires_at: datetime | None = None
    protected: bool
    allow_download: bool
    allow_preview: bool


class SharedFileInfo(CamelModel):
    filename: str
    mime_type: str
    size: int
    type: str
    created_at: datetime | None = None
    expires_at: datetime | None = None
    allow_download: bool
    allow_preview: bool
    access_count: int


class BatchDelete(StrictInput):
    file_ids: list[str] = Field(min_length=1, max_length=100)


class ItemError(CamelModel):
    code: str
    message: str


class BatchItem(CamelModel):
    index: int
    id: str
    success: bool
    error: ItemError | None = None


class BatchResult(CamelModel):
    deleted: int
    failed: int
    results: list[BatchItem]


class StorageUsage(CamelModel):
    total_used: int
    total_limit: int = Field(description="Per-user quota in bytes; 0 = unlimited")
    file_count: int
    by_type: dict[str, int] = Field(description="Bytes per file type")
    count_by_type: dict[str, int]
    by_company: dict[str, int] = Field(description="Bytes per company the caller owns (all uploaders)")
    recent_uploads: list[FileInfo]


def _clean_tags(values: list[str]) -> list[str]:
    out: list[str] = []
    for raw in values:
        tag = raw.strip()
        if not tag or len(tag) > 50:
            raise ValueError("Tags are 1-50 characters")
        if tag not in out:
            out.append(tag)
    return out
