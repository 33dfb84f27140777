"""Files through real HTTP (Serve) with multipart bodies: uploads, chunked
uploads, downloads, shares, isolation, batch delete, usage, storage cleanup."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests.utils.fixtures import assert_error, assert_ok

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + struct.pack(">II", 640, 480) + b"\x08\x02\x00\x00\x00" \
    + os.urandom(2000)


def _path_of(file_id: str) -> str:
    from troupe.infra.storage import get_storage
    from troupe.platform.files.service import object_key

    return get_storage().path(object_key(uuid.UUID(file_id)))


def _stored(file_id: str) -> bytes | None:
    """The bytes on disk under the storage root (the test has the server's settings)."""
    path = _path_of(file_id)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return fh.read()


async def _upload(client, who, content: bytes, name: str = "notes.txt", **fields):
    data = {k: v for k, v in fields.items() if v is not None}
    return await client.post("/api/files/upload", headers=who.headers, files={"file": (name, content)}, data=data)


async def test_upload_download_round_trip(client, user):
    content = os.urandom(300_000)
    zipped = b"PK\x03\x04" + content  # a zip by its magic bytes
    meta = json.dumps({"purpose": "round trip"})
    data = assert_ok(await _upload(client, user, zipped, name="../../etc/pass\"wd.zip", metadata=meta,
                                   tags="alpha, beta"), 201)
    assert data["mimeType"] == "application/zip" and data["type"] == "archive"
    assert data["size"] == len(zipped) and data["private"] is False  # the spec's default
    assert data["uploadedBy"] == user.id and data["tags"] == ["alpha", "beta"]
    assert data["metadata"]["purpose"] == "round trip"
    assert "/" not in data["filename"] and '"' not in data["filename"]
    assert data["url"].endswith(f"/api/files/{data['id']}/download")
    # The stored object's path comes from the id, not from the name.
    assert "etc" not in _path_of(data["id"]) and _stored(data["id"]) == zipped

    resp = await client.get(f"/api/files/{data['id']}/download", headers=user.headers)
    assert resp.status_code == 200
    assert resp.content == zipped
    assert resp.headers["content-type"].startswith("application/zip")
    assert resp.headers["content-length"] == str(len(zipped))
    disposition = resp.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "/" not in disposition.split("filename*=")[0]

    ranged = await client.get(f"/api/files/{data['id']}/download", headers={**user.headers, "Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == zipped[10:20]
    assert ranged.headers["content-range"] == f"bytes 10-19/{len(zipped)}"

    png = assert_ok(await _upload(client, user, PNG, name="pic.bin"), 201)
    assert png["mimeType"] == "image/png" and png["type"] == "image"
    assert png["metadata"]["width"] == 640 and png["metadata"]["height"] == 480
    inline = await client.get(f"/api/files/{png['id']}/download?inline=true", headers=user.headers)
    assert inline.headers["content-disposition"].startswith("inline;") and inline.content == PNG

    text = assert_ok(await _upload(client, user, "héllo wörld\n".encode(), name="été.csv"), 201)
    assert text["mimeType"] == "text/csv" and text["type"] == "document"


async def test_upload_type_is_answered_and_filtered(client, user):
    """The spec's upload ``type`` (the client's category) comes back as ``type`` and filters the list;
    the content is still sniffed (mimeType) whatever the client calls it."""
    tag = uuid.uuid4().hex[:8]
    avatar = assert_ok(await _upload(client, user, PNG, name="me.png", type="Avatar", tags=tag), 201)
    assert avatar["type"] == "avatar" and avatar["mimeType"] == "image/png" and "category" not in avatar["metadata"]
    doc = assert_ok(await _upload(client, user, b"minutes", name="minutes.txt", tags=tag), 201)
    assert doc["type"] == "document"
    listed = assert_ok(await client.get("/api/files", params={"type": "avatar", "tags": tag}, headers=user.headers))
    assert [f["id"] for f in listed] == [avatar["id"]]
    sniffed = assert_ok(await client.get("/api/files", params={"type": "document", "tags": tag},
                                         headers=user.headers))
    assert [f["id"] for f in sniffed] == [doc["id"]]
    # Any well-formed type is a filter (the spec's types are open-ended), not a 422.
    assert assert_ok(await client.get("/api/files", params={"type": "weird", "tags": tag}, headers=user.headers)) == []
    assert_error(await client.get("/api/files", params={"type": "no spaces"}, headers=user.headers),
                 422, "VAL_001", field="type")
    assert_error(await _upload(client, user, b"x", type="../etc"), 422, "VAL_001", field="type")
    usage = assert_ok(await client.get("/api/files/storage/usage", headers=user.headers))
    assert usage["countByType"]["avatar"] >= 1


async def test_oversize_upload_is_refused_and_not_stored(client, user):
    from troupe.config import get_settings
    from troupe.infra.storage import get_storage

    cap = get_settings().max_upload_bytes
    before = set(await _all_objects(get_storage()))
    resp = await _upload(client, user, b"a" * (cap + 1), name="big.txt")
    assert_error(resp, 413, "VAL_008")
    assert set(await _all_objects(get_storage())) == before


async def _all_objects(storage) -> list[str]:
    import asyncio

    root = storage.path("objects")
    return await asyncio.to_thread(lambda: [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs])


async def test_refused_types(client, user):
    assert_error(await _upload(client, user, b"\x7fELF\x02\x01\x01" + os.urandom(100), name="tool.png"),
                 415, "VAL_007")
    assert_error(await _upload(client, user, b"MZ\x90\x00" + os.urandom(100), name="setup.exe"), 415, "VAL_007")
    assert_error(await _upload(client, user, b"<svg onload=alert(1)></svg>", name="x.svg"), 415, "VAL_007")
    assert_error(await _upload(client, user, b"#!/bin/sh\nrm -rf /\n", name="a.txt"), 415, "VAL_007")
    assert_error(await _upload(client, user, bytes(range(256)) * 4, name="blob.dat"), 415, "VAL_007")


async def test_upload_input_errors(client, user, other_user):
    assert_error(await client.post("/api/files/upload", headers=user.headers, data={"private": "true"},
                                   files={"other": ("a.txt", b"hi")}), 422, "VAL_002", field="file")
    assert_error(await client.post("/api/files/upload", headers=user.headers, json={"file": "x"}), 422, "VAL_003")
    assert_error(await _upload(client, user, b"hello", metadata="{not json"), 422, "VAL_003", field="metadata")
    assert_error(await _upload(client, user, b"hello", private="maybe"), 422, "VAL_003", field="private")
    assert_error(await client.post("/api/files/upload", files={"file": ("a.txt", b"hi")}), 401, "AUTH_001")
    # A company of someone else: invisible, so not found (and nothing stored).
    company = assert_ok(await client.post("/api/companies", headers=other_user.headers,
                                          json={"name": f"Files Co {uuid.uuid4().hex[:6]}", "type": "other", "industry": "other"}), 201)
    assert_error(await _upload(client, user, b"hello", companyId=company["id"]), 404, "RES_001")


async def _chunk(client, who, part: bytes, index: int, total: int, upload_id: str | None, filename="doc.txt"):
    data = {"chunkIndex": str(index), "totalChunks": str(total), "filename": filename}
    if upload_id:
        data["fileId"] = upload_id
    return await client.post("/api/files/upload/chunk", headers=who.headers, data=data,
                             files={"chunk": ("blob", part)})


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [2, 0, 3, 1]])
async def test_chunked_upload(client, user, order):
    content = b"".join(f"line {i}: {'x' * 50}\n".encode() for i in range(4000))
    parts = [content[i * 70_000:(i + 1) * 70_000] for i in range(4)]
    assert b"".join(parts) == content
    upload_id = None if order[0] == 0 else uuid.uuid4().hex
    for n, index in enumerate(order):
        got = assert_ok(await _chunk(client, user, parts[index], index, 4, upload_id, "report.txt"), 201)
        upload_id = got["fileId"]
        assert got["receivedChunks"] == n + 1
    checksum = hashlib.sha256(content).hexdigest()
    data = assert_ok(await client.post("/api/files/upload/complete", headers=user.headers,
                                       json={"fileId": upload_id, "totalChunks": 4, "checksum": checksum,
                                             "tags": ["chunked"], "type": "report"}), 201)
    assert data["size"] == len(content) and data["filename"] == "report.txt" and data["mimeType"] == "text/plain"
    assert data["type"] == "report" and data["private"] is False
    assert data["metadata"]["sha256"] == checksum
    resp = await client.get(f"/api/files/{data['id']}/download", headers=user.headers)
    assert resp.content == content
    # The parts are gone once assembled; completing again finds nothing.
    assert_error(await client.post("/api/files/upload/complete", headers=user.headers,
                                   json={"fileId": upload_id, "totalChunks": 4}), 404, "RES_001")


async def test_chunked_upload_errors(client, user, other_user):
    upload_id = uuid.uuid4().hex
    assert_ok(await _chunk(client, user, b"first part ", 0, 3, upload_id), 201)
    assert_ok(await _chunk(client, user, b"last part", 2, 3, upload_id), 201)
    err = assert_error(await client.post("/api/files/upload/complete", headers=user.headers,
                                         json={"fileId": upload_id, "totalChunks": 3}), 422, "VAL_001")
    assert err["details"]["missingChunks"] == [1]
    assert_error(await _chunk(client, user, b"x", 3, 3, upload_id), 422, "VAL_001", field="chunkIndex")
    assert_error(await _chunk(client, user, b"x", 1, 5, upload_id), 422, "VAL_001", field="totalChunks")
    # Another user cannot complete (or even see) this upload.
    assert_error(await client.post("/api/files/upload/complete", headers=other_user.headers,
                                   json={"fileId": upload_id, "totalChunks": 3}), 404, "RES_001")
    assert_error(await client.post("/api/files/upload/complete", headers=user.headers,
                                   json={"fileId": "../../etc", "totalChunks": 1}), 404, "RES_001")
    assert_ok(await _chunk(client, user, b"middle ", 1, 3, upload_id), 201)
    # upload/complete is JSON: the general body limit holds there too.
    assert_error(await client.post("/api/files/upload/complete", headers=user.headers,
                                   json={"fileId": upload_id, "totalChunks": 3,
                                         "metadata": {"pad": "x" * 2_000_000}}), 413, "VAL_008")
    assert_error(await client.post("/api/files/upload/complete", headers=user.headers,
                                   json={"fileId": upload_id, "totalChunks": 3, "checksum": "0" * 64}),
                 422, "VAL_001", field="checksum")

    # An upload past its lifetime answers RES_006.
    from troupe.infra.storage import get_storage
    from troupe.timeutil import utcnow

    stale = uuid.uuid4().hex
    assert_ok(await _chunk(client, user, b"old", 0, 2, stale), 201)
    key = f"uploads/{uuid.UUID(user.id).hex}/{stale}/manifest.json"
    manifest = json.loads(await get_storage().read_bytes(key))
    manifest["createdAt"] = (utcnow() - timedelta(days=2)).isoformat()
    await get_storage().write_bytes(key, json.dumps(manifest).encode())
    assert_error(await _chunk(client, user, b"new", 1, 2, stale), 410, "RES_006")
    assert_error(await client.post("/api/files/upload/complete", headers=user.headers,
                                   json={"fileId": stale, "totalChunks": 2}), 404, "RES_001")


async def _join(company_id: str, member_id: str, role: str = "member") -> None:
    from troupe.db import models
    from troupe.db.session import session_scope

    async with session_scope() as session:
        company = await session.get(models.Company, uuid.UUID(company_id))
        members = {str(m): r for m, r in (company.member_roles or {}).items()}
        await session.execute(update(models.Company).where(models.Company.id == company.id)
                              .values(team_members=[*(company.team_members or []), uuid.UUID(member_id)],
                                      member_roles={**members, member_id: role}))


async def _company(client, owner) -> dict:
    return assert_ok(await client.post("/api/companies", headers=owner.headers, json={
        "name": f"Files Co {uuid.uuid4().hex[:6]}", "type": "other", "industry": "other"}), 201)


async def test_isolation_and_listing(client, user, other_user, admin, user_factory):
    """Not private (the default) reaches the uploader's teammates, never another tenant."""
    tag = uuid.uuid4().hex[:8]
    teammate = await user_factory("user")
    await _join((await _company(client, user))["id"], teammate.id)
    private = assert_ok(await _upload(client, user, b"secret", name=f"secret-{tag}.txt", tags=tag,
                                      private="true"), 201)
    public = assert_ok(await _upload(client, user, b"hello all", name=f"public-{tag}.txt", tags=tag), 201)
    assert private["private"] is True and public["private"] is False
    for who in (other_user, teammate):
        for path in (f"/api/files/{private['id']}", f"/api/files/{private['id']}/download"):
            assert_error(await client.get(path, headers=who.headers), 404, "RES_001")
        assert_error(await client.put(f"/api/files/{private['id']}", headers=who.headers,
                                      json={"filename": "mine.txt"}), 404, "RES_001")
        assert_error(await client.delete(f"/api/files/{private['id']}", headers=who.headers), 404, "RES_001")
        assert_error(await client.post(f"/api/files/{private['id']}/share", headers=who.headers, json={}),
                     404, "RES_001")
    # Another tenant (no company in common) does not see the non-private file either.
    for path in (f"/api/files/{public['id']}", f"/api/files/{public['id']}/download"):
        assert_error(await client.get(path, headers=other_user.headers), 404, "RES_001")
    assert_error(await client.get("/api/files/not-a-uuid", headers=user.headers), 404, "RES_001")

    assert assert_ok(await client.get(f"/api/files/{public['id']}", headers=teammate.headers))["id"] == public["id"]
    resp = await client.get(f"/api/files/{public['id']}/download", headers=teammate.headers)
    assert resp.status_code == 200 and resp.content == b"hello all"
    # Readable is not writable: only the uploader changes or deletes it.
    assert_error(await client.put(f"/api/files/{public['id']}", headers=teammate.headers,
                                  json={"private": True}), 403, "AUTH_004")
    assert_error(await client.delete(f"/api/files/{public['id']}", headers=teammate.headers), 403, "AUTH_004")

    theirs = (await client.get(f"/api/files?tags={tag}", headers=teammate.headers)).json()
    assert [f["id"] for f in theirs["data"]] == [public["id"]]
    assert assert_ok(await client.get(f"/api/files?tags={tag}", headers=other_user.headers)) == []
    mine = (await client.get(f"/api/files?tags={tag}&sort=filename&order=desc&limit=1", headers=user.headers)).json()
    assert [f["id"] for f in mine["data"]] == [private["id"]]
    assert mine["pagination"]["total"] == 2 and mine["pagination"]["hasNext"] is True
    only_private = assert_ok(await client.get(f"/api/files?tags={tag}&private=true", headers=user.headers))
    assert [f["id"] for f in only_private] == [private["id"]]
    searched = assert_ok(await client.get(f"/api/files?search=public-{tag}&type=document", headers=user.headers))
    assert [f["id"] for f in searched] == [public["id"]]
    # A platform admin sees every tenant's files.
    assert assert_ok(await client.get(f"/api/files/{private['id']}", headers=admin.headers))["id"] == private["id"]

    updated = assert_ok(await client.put(f"/api/files/{private['id']}", headers=user.headers,
                                         json={"filename": "a/b\\renamed.txt", "tags": ["x", "x", "y"],
                                               "private": False}))
    assert updated["filename"] == "renamed.txt" and updated["tags"] == ["x", "y"] and updated["private"] is False
    assert updated["originalName"] == f"secret-{tag}.txt"
    assert assert_ok(await client.get(f"/api/files/{private['id']}", headers=teammate.headers))["id"] == private["id"]
    assert_error(await client.get(f"/api/files/{private['id']}", headers=other_user.headers), 404, "RES_001")
    assert_error(await client.put(f"/api/files/{private['id']}", headers=user.headers,
                                  json={"uploadedBy": other_user.id, "ownerId": other_user.id}), 422, "VAL_001")


async def test_company_files_visible_to_members(client, user, other_user, user_factory):
    company = await _company(client, user)
    file = assert_ok(await _upload(client, user, b"company doc", companyId=company["id"]), 201)
    secret = assert_ok(await _upload(client, user, b"board only", companyId=company["id"], private="true"), 201)
    assert file["companyId"] == company["id"] and file["private"] is False and secret["private"] is True
    # Not private is scoped to the company: another tenant sees neither.
    for fid in (file["id"], secret["id"]):
        assert_error(await client.get(f"/api/files/{fid}", headers=other_user.headers), 404, "RES_001")
    # The uploader's teammate in another company does not see this company's files.
    elsewhere = await user_factory("user")
    await _join((await _company(client, user))["id"], elsewhere.id)
    assert_error(await client.get(f"/api/files/{file['id']}", headers=elsewhere.headers), 404, "RES_001")
    await _join(company["id"], other_user.id)
    # The company's people read its files, private or not.
    for fid in (file["id"], secret["id"]):
        assert assert_ok(await client.get(f"/api/files/{fid}", headers=other_user.headers))["id"] == fid
    # A member may read but not write the company, so cannot upload into it.
    assert_error(await _upload(client, other_user, b"hi", companyId=company["id"]), 403, "AUTH_004")
    usage = assert_ok(await client.get("/api/files/storage/usage", headers=user.headers))
    assert usage["byCompany"][company["id"]] == len(b"company doc") + len(b"board only")


async def test_share_with_password_and_expiry(client, user, other_user):
    content = b"shared content " * 100
    file = assert_ok(await _upload(client, user, content, name="shared.txt"), 201)
    assert_error(await client.post(f"/api/files/{file['id']}/share", headers=user.headers,
                                   json={"expiresAt": "2000-01-01T00:00:00Z"}), 422, "VAL_001", field="expiresAt")
    assert_error(await client.post(f"/api/files/{file['id']}/share", headers=user.headers,
                                   json={"expiresIn": 3600, "expiresAt": "2999-01-01T00:00:00Z"}), 422, "VAL_001")
    share = assert_ok(await client.post(f"/api/files/{file['id']}/share", headers=user.headers,
                                        json={"password": "open sesame", "expiresIn": 3600}), 201)
    assert share["protected"] is True and share["shareUrl"].endswith(f"/api/files/shared/{share['shareId']}")
    url = f"/api/files/shared/{share['shareId']}"
    # Public: no token, but the password is needed.
    assert_error(await client.get(url), 401, "AUTH_001")
    assert_error(await client.get(url, params={"password": "wrong"}), 401, "AUTH_006")
    got = await client.get(url, params={"password": "open sesame"})
    assert got.status_code == 200 and got.content == content
    assert got.headers["content-disposition"].startswith("attachment;")
    got = await client.get(url, headers={"X-Share-Password": "open sesame"})
    assert got.content == content
    info = assert_ok(await client.get(url, params={"password": "open sesame", "info": "true"}))
    assert info["accessCount"] == 3 and info["filename"] == "shared.txt"

    from troupe.db import models
    from troupe.db.session import session_scope
    from troupe.timeutil import utcnow

    async with session_scope() as session:
        row = (await session.execute(update(models.FileShare).where(models.FileShare.share_id == share["shareId"])
                                     .values(expires_at=utcnow() - timedelta(seconds=1))
                                     .returning(models.FileShare.access_count))).scalar_one()
    assert row == 3
    assert_error(await client.get(url, params={"password": "open sesame"}), 410, "RES_006")
    assert_error(await client.get("/api/files/shared/nonexistent-share"), 404, "RES_001")

    preview_only = assert_ok(await client.post(f"/api/files/{file['id']}/share", headers=user.headers,
                                               json={"allowDownload": False}), 201)
    shown = await client.get(f"/api/files/shared/{preview_only['shareId']}")
    assert shown.status_code == 200 and shown.headers["content-disposition"].startswith("inline;")
    assert_error(await client.post(f"/api/files/{file['id']}/share", headers=user.headers,
                                   json={"allowDownload": False, "ownerId": other_user.id}), 422, "VAL_001")


async def test_delete_and_batch_delete_remove_objects(client, user, other_user, admin):
    one = assert_ok(await _upload(client, user, b"to delete"), 201)
    assert _stored(one["id"]) == b"to delete"
    assert_ok(await client.delete(f"/api/files/{one['id']}", headers=user.headers))
    assert _stored(one["id"]) is None
    assert_error(await client.get(f"/api/files/{one['id']}", headers=user.headers), 404, "RES_001")

    by_admin = assert_ok(await _upload(client, user, b"admin removes"), 201)
    assert_ok(await client.delete(f"/api/files/{by_admin['id']}", headers=admin.headers))
    assert _stored(by_admin["id"]) is None

    mine = [assert_ok(await _upload(client, user, f"file {i}".encode()), 201)["id"] for i in range(3)]
    foreign_public = assert_ok(await _upload(client, other_user, b"not yours", private="false"), 201)["id"]
    foreign_private = assert_ok(await _upload(client, other_user, b"hidden", private="true"), 201)["id"]
    ids = [mine[0], foreign_public, "junk", mine[1], foreign_private, mine[2], mine[0]]
    result = assert_ok(await client.post("/api/files/batch/delete", headers=user.headers, json={"fileIds": ids}))
    assert result["deleted"] == 3 and result["failed"] == 4
    outcome = {(r["index"], r["success"], (r["error"] or {}).get("code")) for r in result["results"]}
    # Another tenant's files are invisible, not merely undeletable, whether private or not.
    assert outcome == {(0, True, None), (1, False, "RES_001"), (2, False, "RES_001"), (3, True, None),
                       (4, False, "RES_001"), (5, True, None), (6, False, "RES_001")}
    for fid in mine:
        assert _stored(fid) is None
    for fid in (foreign_public, foreign_private):
        assert _stored(fid) is not None
    assert_error(await client.post("/api/files/batch/delete", headers=user.headers, json={"fileIds": []}),
                 422, "VAL_001")


async def test_storage_usage(client, user_factory):
    who = await user_factory("user")
    empty = assert_ok(await client.get("/api/files/storage/usage", headers=who.headers))
    assert empty["totalUsed"] == 0 and empty["fileCount"] == 0 and empty["recentUploads"] == []
    assert_ok(await _upload(client, who, b"a" * 100, name="a.txt"), 201)
    assert_ok(await _upload(client, who, b"b" * 50, name="b.md"), 201)
    assert_ok(await _upload(client, who, PNG, name="c.png"), 201)
    usage = assert_ok(await client.get("/api/files/storage/usage", headers=who.headers))
    assert usage["totalUsed"] == 150 + len(PNG) and usage["fileCount"] == 3
    assert usage["byType"] == {"document": 150, "image": len(PNG)}
    assert usage["countByType"] == {"document": 2, "image": 1}
    assert usage["totalLimit"] > 0 and len(usage["recentUploads"]) == 3
