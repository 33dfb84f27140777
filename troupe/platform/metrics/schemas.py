"""Metrics shapes. Fields the spec lists but Troupe does not measure (disk IOPS,
query time without pg_stat_statements, revenue without billing) are null rather
than invented."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from troupe.platform.schemas import CamelModel

Granularity = Literal["minute", "hour", "day", "week"]
BusinessPeriod = Literal["day", "week", "month", "quarter", "year"]
PerfMetric = Literal["taskDuration", "taskQueueTime", "nodeDuration", "toolLatency", "taskThroughput",
                     "taskErrorRate"]


class Cpu(CamelModel):
    usage: float = Field(description="Host CPU %, sampled over 0.2 s")
    cores: int
    load_average: list[float]


class Memory(CamelModel):
    total: int
    used: int
    free: int
    cached: int | None = None


class Disk(CamelModel):
    """The volume holding the data directory."""

    total: int
    used: int
    free: int
    iops: float | None = Field(None, description="Not measured")


class Network(CamelModel):
    inbound: int = Field(description="Bytes received by the host since boot")
    outbound: int = Field(description="Bytes sent by the host since boot")
    connections: int | None = Field(None, description="Open client connections to PostgreSQL")


class HostMetrics(CamelModel):
    cpu: Cpu
    memory: Memory
    disk: Disk
    network: Network


class ApplicationMetrics(CamelModel):
    uptime: float = Field(description="Seconds since this replica's process started")
    version: str
    environment: str
    active_connections: int | None = Field(None, description="Redis clients connected")
    queue_size: int = Field(description="Tasks waiting to run (status pending, queued)")
    running_tasks: int
    cache_hit_rate: float | None = Field(None, description="Redis keyspace hit rate, 0..1")


class DatabaseMetrics(CamelModel):
    connections: int
    query_time: float | None = Field(None, description="Mean ms of active queries right now")
    slow_queries: int = Field(description="Queries active for more than 1 s right now")
    size: int
    commits: int
    rollbacks: int
    cache_hit_rate: float | None = None
    deadlocks: int


class RayMetrics(CamelModel):
    nodes: int
    cluster_resources: dict[str, float]
    available_resources: dict[str, float]


class RedisMetrics(CamelModel):
    version: str | None = None
    used_memory: int | None = None
    connected_clients: int | None = None
    ops_per_sec: int | None = None
    uptime: int | None = None


class ProcessMetrics(CamelModel):
    pid: int
    rss: int
    cpu_percent: float
    threads: int


class SystemMetrics(CamelModel):
    timestamp: datetime
    system: HostMetrics
    application: ApplicationMetrics
    database: DatabaseMetrics
    ray: RayMetrics
    redis: RedisMetrics
    process: ProcessMetrics


class Point(CamelModel):
    timestamp: datetime
    value: float


class Summary(CamelModel):
    min: float
    max: float
    avg: float
    p50: float
    p95: float
    p99: float
    count: int


class PerformanceMetrics(CamelModel):
    start_date: datetime
    end_date: datetime
    granularity: Granularity
    time_series: dict[str, list[Point]]
    summary: dict[str, Summary | None]


class Revenue(CamelModel):
    total: float | None = Field(None, description="No billing records exist: null")
    recurring: float | None = None
    growth: float | None = None


class Usage(CamelModel):
    total_tasks: int
    total_agents: int
    total_companies: int
    active_users: int = Field(description="Users who created a task or logged in during the period")
    new_tasks: int
    new_companies: int
    new_users: int
    task_growth: float | None = Field(None, description="% change of new tasks vs the previous period")
    company_growth: float | None = None
    user_growth: float | None = None


class BusinessPerformance(CamelModel):
    success_rate: float = Field(description="% of finished tasks that completed (0 when none finished)")
    average_response_time: float | None = Field(description="Mean task execution time (ms)")
    customer_satisfaction: float | None = Field(description="Mean agent review rating (1-5)")
    churn_rate: float | None = Field(None, description="Not measured")


class Costs(CamelModel):
    infrastructure: float | None = Field(None, description="Not measured")
    ai: float = Field(description="Sum of task costs (USD) recorded by the engine in the period")
    support: float | None = Field(None, description="Not measured")
    total: float
    tokens: int


class BusinessMetrics(CamelModel):
    period: BusinessPeriod
    start_date: datetime
    end_date: datetime
    revenue: Revenue
    usage: Usage
    performance: BusinessPerformance
    costs: Costs
