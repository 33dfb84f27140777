"""Dashboard, logs, metrics, system settings and backup/restore, through Serve over HTTP."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import delete, select, update

from tests.utils.fixtures import assert_error, assert_ok
from troupe.config import get_settings
from troupe.db import models
from troupe.db.session import session_scope
from troupe.timeutil import utcnow


def assert_invalid(resp, field: str | None = None) -> dict:
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"].startswith("VAL_"), error
    if field:
        assert field in (error.get("field") or ""), error
    return error


async def make_company(owner_id: str, *, name: str | None = None, tasks: tuple[str, ...] = ()) -> str:
    """A company with tasks in the given statuses (completed ones took 1 s, 3 s, ...)."""
    now = utcnow()
    async with session_scope() as session:
        company = models.Company(name=name or f"co-{uuid.uuid4().hex[:6]}", type="software",
                                 owner_id=uuid.UUID(owner_id), status="active")
        session.add(company)
        await session.flush()
        for i, status in enumerate(tasks):
            done = status in ("completed", "failed")
            session.add(models.Task(name=f"t{i}", type="single_agent", status=status, company_id=company.id,
                                    created_by=uuid.UUID(owner_id), error={"message": "boom"} if status == "failed"
                                    else None, started_at=now - timedelta(seconds=10),
                                    completed_at=now if done else None, execution_time=1000 * (2 * i + 1)
                                    if done else None, meta={"cost": 0.25}))
        return str(company.id)


# --------------------------------------------------------------------------- dashboard


async def test_dashboard_stats_are_scoped_to_own_companies(client, user, other_user, admin):
    mine = await make_company(user.id, tasks=("completed", "failed", "pending"))
    await make_company(other_user.id, tasks=("completed",))
    data = assert_ok(await client.get("/api/dashboard/stats", headers=user.headers, params={"period": "today"}))
    o = data["overview"]
    assert (o["totalCompanies"], o["activeCompanies"], o["totalTasks"]) == (1, 1, 3)
    assert (o["completedTasks"], o["failedTasks"], o["successRate"]) == (1, 1, 50.0)
    assert sum(p["value"] for p in data["trends"]["tasks"]) == 3
    assert [c["id"] for c in data["topPerformers"]["companies"]] == [mine]
    assert data["topPerformers"]["companies"][0]["totalTasks"] == 3
    assert all(a["companyId"] == mine for a in data["recentActivity"])
    assert any(a["type"] == "task_completed" for a in data["recentActivity"])

    everything = assert_ok(await client.get("/api/dashboard/stats", headers=admin.headers))["overview"]
    assert everything["totalCompanies"] >= 2 and everything["totalTasks"] >= 4

    one = assert_ok(await client.get("/api/dashboard/stats", headers=user.headers, params={"companyId": mine}))
    assert one["overview"]["totalTasks"] == 3


async def test_rates_of_nothing_are_zero_not_null(client, user_factory):
    """The spec's numbers: a rate over no finished task is 0; a mean over no sample stays null."""
    newcomer = await user_factory("user")
    await make_company(newcomer.id, tasks=("pending",))
    stats = assert_ok(await client.get("/api/dashboard/stats", headers=newcomer.headers))
    assert stats["overview"]["successRate"] == 0 and stats["overview"]["totalTasks"] == 1
    assert stats["topPerformers"]["companies"][0]["successRate"] == 0
    assert stats["topPerformers"]["companies"][0]["averageTime"] is None  # no task has run: nothing to average
    perf = assert_ok(await client.get("/api/dashboard/performance", headers=newcomer.headers))
    assert perf["application"]["errorRate"] == 0 and perf["business"]["taskCompletionRate"] == 0
    assert perf["application"]["responseTime"] is None


async def test_dashboard_stats_refuses_bad_input_and_foreign_company(client, user, other_user):
    theirs = await make_company(other_user.id)
    assert_error(await client.get("/api/dashboard/stats", headers=user.headers, params={"companyId": theirs}),
                 404, "RES_001")
    assert_invalid(await client.get("/api/dashboard/stats", headers=user.headers, params={"period": "decade"}))
    assert_invalid(await client.get("/api/dashboard/stats", headers=user.headers, params={"companyId": "x"}))
    assert_error(await client.get("/api/dashboard/stats"), 401, "AUTH_001")


async def test_dashboard_performance(client, user, admin):
    await make_company(user.id, tasks=("completed", "completed", "failed"))
    data = assert_ok(await client.get("/api/dashboard/performance", headers=user.headers,
                                      params={"period": "day", "metrics": ["throughput", "errorRate"]}))
    assert data["system"] is None  # host figures need metrics:read
    assert data["business"]["taskCompletionRate"] == round(2 / 3 * 100, 2)
    assert data["application"]["errorRate"] == round(1 / 3 * 100, 2)
    assert data["business"]["averageExecutionTime"] == 3000.0  # (1 s + 3 s + 5 s) / 3
    assert data["business"]["costPerTask"] == 0.25
    assert sum(p["value"] for p in data["trends"]["throughput"]) == 3
    assert data["trends"]["responseTime"] is None  # not asked for
    sysload = assert_ok(await client.get("/api/dashboard/performance", headers=admin.headers))["system"]
    assert 0 <= sysload["memory"] <= 100 and 0 <= sysload["disk"] <= 100
    assert_invalid(await client.get("/api/dashboard/performance", headers=user.headers,
                                    params={"metrics": ["bogus"]}))


async def test_dashboard_alerts_scoped(client, user, other_user):
    mine = await make_company(user.id, tasks=("failed",))
    data = assert_ok(await client.get("/api/dashboard/alerts", headers=user.headers))
    assert [a["companyId"] for a in data["alerts"]] == [mine]
    assert data["alerts"][0]["severity"] == "high" and data["alerts"][0]["status"] == "active"
    assert data["summary"] == {"total": 1, "critical": 0, "high": 1, "medium": 0, "low": 0}
    assert assert_ok(await client.get("/api/dashboard/alerts", headers=other_user.headers))["alerts"] == []
    low = assert_ok(await client.get("/api/dashboard/alerts", headers=user.headers, params={"severity": "low"}))
    assert low["alerts"] == [] and low["summary"]["total"] == 1
    resolved = assert_ok(await client.get("/api/dashboard/alerts", headers=user.headers,
                                          params={"status": "resolved"}))
    assert resolved["alerts"] == []
    assert_invalid(await client.get("/api/dashboard/alerts", headers=user.headers, params={"severity": "huge"}))
    assert_invalid(await client.get("/api/dashboard/alerts", headers=user.headers, params={"limit": 0}))


# --------------------------------------------------------------------------- logs


async def test_logs_filter_search_aggregate_and_page(client, user, admin):
    source = f"ops-test-{uuid.uuid4().hex[:6]}"
    company = await make_company(user.id)
    now = utcnow()
    async with session_scope() as session:
        for i in range(5):
            session.add(models.Log(level="error" if i < 2 else "info", source=source, message=f"needle {i} 100%",
                                   company_id=uuid.UUID(company) if i == 0 else None, request_id=f"req-{i}",
                                   created_at=now - timedelta(minutes=i)))
    assert_error(await client.get("/api/logs", headers=user.headers), 403, "AUTH_004")
    resp = await client.get("/api/logs", headers=admin.headers, params={"source": source, "limit": 2})
    data = assert_ok(resp)
    assert [e["message"] for e in data["logs"]] == ["needle 0 100%", "needle 1 100%"]  # newest first
    assert resp.json()["pagination"]["total"] == 5 and resp.json()["pagination"]["hasNext"]
    assert data["aggregations"]["byLevel"] == {"error": 2, "info": 3}
    assert data["aggregations"]["bySource"] == {source: 5}
    assert sum(h["count"] for h in data["aggregations"]["byHour"]) == 5
    page3 = assert_ok(await client.get("/api/logs", headers=admin.headers,
                                       params={"source": source, "limit": 2, "page": 3}))
    assert [e["message"] for e in page3["logs"]] == ["needle 4 100%"]
    errors = await client.get("/api/logs", headers=admin.headers, params={"source": source, "level": "error"})
    assert errors.json()["pagination"]["total"] == 2
    by_company = assert_ok(await client.get("/api/logs", headers=admin.headers, params={"companyId": company}))
    assert [e["requestId"] for e in by_company["logs"]] == ["req-0"]
    found = await client.get("/api/logs", headers=admin.headers, params={"search": "NEEDLE 3 100%"})
    assert [e["requestId"] for e in assert_ok(found)["logs"]] == ["req-3"]
    # % is literal in a search, not a wildcard
    assert assert_ok(await client.get("/api/logs", headers=admin.headers,
                                      params={"search": "needle%0", "source": source}))["logs"] == []
    window = await client.get("/api/logs", headers=admin.headers, params={
        "source": source, "startDate": (now - timedelta(minutes=2, seconds=30)).isoformat(),
        "endDate": (now - timedelta(seconds=30)).isoformat()})
    assert window.json()["pagination"]["total"] == 2
    assert_invalid(await client.get("/api/logs", headers=admin.headers, params={"level": "fatal"}), "level")
    assert_invalid(await client.get("/api/logs", headers=admin.headers, params={"startDate": "yesterday"}))
    assert_invalid(await client.get("/api/logs", headers=admin.headers, params={
        "startDate": "2024-02-01T00:00:00Z", "endDate": "2024-01-01T00:00:00Z"}), "startDate")
    clamped = await client.get("/api/logs", headers=admin.headers, params={"source": source, "limit": 1000})
    assert clamped.status_code == 200 and clamped.json()["pagination"]["limit"] == 100
    assert_invalid(await client.get("/api/logs", headers=admin.headers, params={"limit": 0}))


# --------------------------------------------------------------------------- metrics


async def test_metrics_system(client, user, admin):
    assert_error(await client.get("/api/metrics/system", headers=user.headers), 403, "AUTH_004")
    data = assert_ok(await client.get("/api/metrics/system", headers=admin.headers))
    assert data["ray"]["nodes"] >= 1 and data["ray"]["clusterResources"]["CPU"] > 0
    assert data["database"]["size"] > 0 and data["database"]["connections"] >= 1
    assert data["redis"]["version"] and data["system"]["cpu"]["cores"] >= 1
    assert data["system"]["memory"]["total"] > data["system"]["memory"]["free"] > 0
    assert data["application"]["environment"] == "test" and data["process"]["rss"] > 0
    assert data["system"]["disk"]["iops"] is None  # not measured, not invented


async def test_metrics_performance(client, user, admin):
    await make_company(user.id, tasks=("completed", "completed", "completed"))  # 1 s, 3 s, 5 s
    start = (utcnow() - timedelta(minutes=5)).isoformat()
    data = assert_ok(await client.get("/api/metrics/performance", headers=admin.headers, params={
        "metrics": ["taskDuration", "taskThroughput"], "granularity": "minute", "startDate": start}))
    assert set(data["timeSeries"]) == {"taskDuration", "taskThroughput"}
    summary = data["summary"]["taskDuration"]
    assert summary["min"] <= 1000 and summary["max"] >= 5000 and summary["count"] >= 3
    assert summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
    assert sum(p["value"] for p in data["timeSeries"]["taskThroughput"]) >= 3
    assert_error(await client.get("/api/metrics/performance", headers=user.headers), 403, "AUTH_004")
    assert_invalid(await client.get("/api/metrics/performance", headers=admin.headers,
                                    params={"granularity": "second"}))
    assert_invalid(await client.get("/api/metrics/performance", headers=admin.headers,
                                    params={"metrics": ["cpu"]}))
    assert_invalid(await client.get("/api/metrics/performance", headers=admin.headers, params={
        "startDate": "2024-02-01T00:00:00Z", "endDate": "2024-01-01T00:00:00Z"}))
    assert_invalid(await client.get("/api/metrics/performance", headers=admin.headers, params={
        "startDate": "2000-01-01T00:00:00Z", "granularity": "minute"}), "granularity")


async def test_metrics_business_needs_billing(client, user, admin, super_admin):
    company = await make_company(user.id, tasks=("completed", "failed"))
    assert_error(await client.get("/api/metrics/business", headers=admin.headers), 403, "AUTH_004")
    data = assert_ok(await client.get("/api/metrics/business", headers=super_admin.headers,
                                      params={"period": "week", "companyId": company}))
    assert data["usage"]["totalTasks"] == 2 and data["usage"]["newTasks"] == 2
    assert data["usage"]["totalCompanies"] == 1
    assert data["performance"]["successRate"] == 50.0
    assert data["costs"]["ai"] == 0.5 and data["costs"]["total"] == 0.5
    assert data["revenue"]["total"] is None  # no billing records: not invented
    assert_invalid(await client.get("/api/metrics/business", headers=super_admin.headers,
                                    params={"period": "century"}))
    assert_error(await client.get("/api/metrics/business", headers=super_admin.headers,
                                  params={"companyId": str(uuid.uuid4())}), 404, "RES_001")


# --------------------------------------------------------------------------- settings


async def test_settings_read_update_audit(client, user, admin, super_admin):
    assert_error(await client.get("/api/settings", headers=user.headers), 403, "AUTH_004")
    current = assert_ok(await client.get("/api/settings", headers=admin.headers))
    assert current["limits"]["maxConcurrentTasks"] >= 1 and "passwordPolicy" in current["security"]
    # Fields nothing could honour are not offered.
    assert "integrations" not in current and "mfaRequired" not in current["security"]
    assert "ipWhitelist" not in current["security"] and "smsEnabled" not in current["notifications"]
    # Unset keys show the environment's values.
    assert current["rateLimits"]["maxRequests"] == get_settings().rate_limit_max_requests
    body = {"general": {"siteName": "Ops Test"}, "security": {"passwordPolicy": {"minLength": 12}},
            "maintenance": {"message": "upgrade"}}
    assert_error(await client.put("/api/settings", headers=admin.headers, json=body), 403, "AUTH_004")
    try:
        data = assert_ok(await client.put("/api/settings", headers=super_admin.headers, json=body))
        assert data["general"]["siteName"] == "Ops Test" and data["maintenance"]["message"] == "upgrade"
        assert data["security"]["passwordPolicy"]["minLength"] == 12
        assert data["security"]["passwordPolicy"]["requireUppercase"] is True  # untouched keys kept
        again = assert_ok(await client.get("/api/settings", headers=admin.headers))
        assert again["general"]["siteName"] == "Ops Test"
        async with session_scope() as session:
            stored = await session.get(models.SystemSetting, "security")
            assert stored.value["password_policy"]["min_length"] == 12
            audit = (await session.execute(select(models.Log).where(
                models.Log.source == "audit", models.Log.user_id == uuid.UUID(super_admin.id),
                models.Log.details["action"].astext == "settings.update"))).scalars().all()
            assert audit and audit[0].details["changed"]["general"] == ["site_name"]

        for bad in ({"limits": {"maxConcurrentTasks": 0}}, {"general": {"supportEmail": "not-an-email"}},
                    {"general": {"siteName": None}}, {"features": {"unknownSwitch": True}}, {"nope": {}},
                    {"security": {"passwordPolicy": {"minLength": 4}}}, {"security": {"mfaRequired": True}},
                    {"integrations": {"openai": {"apiKey": "sk-x"}}}):
            assert_invalid(await client.put("/api/settings", headers=super_admin.headers, json=bad))
        assert assert_ok(await client.get("/api/settings", headers=admin.headers))["limits"] == current["limits"]
        # An empty update changes nothing and answers the settings as they are (the schema allows it).
        unchanged = assert_ok(await client.put("/api/settings", headers=super_admin.headers, json={}))
        assert unchanged["limits"] == current["limits"]
    finally:
        assert_ok(await client.put("/api/settings", headers=super_admin.headers, json={
            "general": {"siteName": current["general"]["siteName"]},
            "security": {"passwordPolicy": current["security"]["passwordPolicy"]},
            "maintenance": current["maintenance"]}))
    # /api/settings/health is still the health domain's route
    assert assert_ok(await client.get("/api/settings/health"))["status"] == "healthy"


# --------------------------------------------------------------------------- backup / restore (last: replaces data)


async def test_backup_restore_round_trip(client, admin, super_admin):
    kept = await make_company(super_admin.id, name="kept-before-backup")
    assert_error(await client.post("/api/settings/backup", headers=admin.headers, json={}), 403, "AUTH_004")
    assert_error(await client.get("/api/settings/backups", headers=admin.headers), 403, "AUTH_004")
    assert_invalid(await client.post("/api/settings/backup", headers=super_admin.headers,
                                     json={"includeFiles": True}), "includeFiles")
    backup = assert_ok(await client.post("/api/settings/backup", headers=super_admin.headers,
                                         json={"includeData": True, "compression": True, "encryption": True}),
                       201)
    assert backup["size"] > 0 and backup["encryption"] and backup["tables"] >= 14
    listed = assert_ok(await client.get("/api/settings/backups", headers=super_admin.headers))
    assert backup["id"] in [b["id"] for b in listed]

    # Change the data after the backup.
    added = await make_company(super_admin.id, name="added-after-backup")
    running = await make_company(super_admin.id, tasks=("running",))
    async with session_scope() as session:
        await session.execute(delete(models.Company).where(models.Company.id == uuid.UUID(kept)))

    assert_error(await client.post("/api/settings/restore", headers=super_admin.headers,
                                   json={"backupId": backup["id"]}), 409, "RES_003")
    async with session_scope() as session:
        await session.execute(update(models.Task).where(models.Task.company_id == uuid.UUID(running))
                              .values(status="completed"))
    assert_error(await client.post("/api/settings/restore", headers=super_admin.headers,
                                   json={"backupId": "backup-nope"}), 404, "RES_001")
    assert_invalid(await client.post("/api/settings/restore", headers=super_admin.headers,
                                     json={"backupId": "../etc/passwd"}), "backupId")
    assert_error(await client.post("/api/settings/restore", headers=admin.headers,
                                   json={"backupId": backup["id"]}), 403, "AUTH_004")

    done = assert_ok(await client.post("/api/settings/restore", headers=super_admin.headers,
                                       json={"backupId": backup["id"]}))
    assert done["backupId"] == backup["id"]
    async with session_scope() as session:
        names = set((await session.execute(select(models.Company.name).where(
            models.Company.id.in_([uuid.UUID(kept), uuid.UUID(added), uuid.UUID(running)])))).scalars())
        restored_audit = (await session.execute(select(models.Log).where(
            models.Log.details["action"].astext == "system.restore"))).scalars().all()
    assert names == {"kept-before-backup"}
    assert restored_audit
    # The platform still serves after the restore, with the same accounts.
    assert assert_ok(await client.get("/api/dashboard/stats", headers=super_admin.headers))["overview"][
        "totalCompanies"] >= 1
