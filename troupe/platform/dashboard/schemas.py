from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from troupe.platform.schemas import CamelModel

StatsPeriod = Literal["today", "week", "month", "year"]
PerfPeriod = Literal["hour", "day", "week", "month"]
PerfTrend = Literal["responseTime", "throughput", "errorRate", "costs"]
Severity = Literal["low", "medium", "high", "critical"]
AlertStatus = Literal["active", "resolved", "acknowledged"]


class Overview(CamelModel):
    total_companies: int
    active_companies: int
    total_agents: int
    active_agents: int
    total_tools: int = Field(description="Distinct tools installed in the companies (all tools system-wide)")
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    success_rate: float = Field(description="% of finished tasks that completed (0 when none finished)")


class TrendData(CamelModel):
    date: datetime
    value: float
    change: float | None = Field(None, description="Difference from the previous bucket")


class Trends(CamelModel):
    companies: list[TrendData] = Field(description="Companies created per bucket")
    agents: list[TrendData] = Field(description="Agents created per bucket")
    tasks: list[TrendData] = Field(description="Tasks created per bucket")
    performance: list[TrendData] = Field(description="Mean execution time (ms) of tasks finished per bucket")


class CompanyPerformance(CamelModel):
    id: str
    name: str
    success_rate: float = Field(description="% of finished tasks that completed (0 when none finished)")
    total_tasks: int
    average_time: float | None


class TopAgentPerformance(CamelModel):
    """One of the dashboard's top agents (the agent's own AgentPerformance is in agents.schemas)."""

    id: str
    name: str
    success_rate: float = Field(description="% of finished executions that completed (0 when none finished)")
    total_executions: int
    average_time: float | None


class ToolPerformance(CamelModel):
    id: str
    name: str
    success_rate: float = Field(description="% of calls that succeeded")
    total_calls: int
    average_time: float | None


class TopPerformers(CamelModel):
    companies: list[CompanyPerformance]
    agents: list[TopAgentPerformance]
    tools: list[ToolPerformance]


class Activity(CamelModel):
    id: str
    type: Literal["task_completed", "agent_created", "company_started", "error_occurred"]
    title: str
    description: str
    timestamp: datetime
    user_id: str | None = None
    company_id: str | None = None


class DashboardStats(CamelModel):
    period: StatsPeriod
    overview: Overview
    trends: Trends
    top_performers: TopPerformers
    recent_activity: list[Activity]


class NetworkIo(CamelModel):
    inbound: int
    outbound: int


class SystemLoad(CamelModel):
    cpu: float = Field(description="Host CPU %")
    memory: float = Field(description="Host memory used %")
    disk: float = Field(description="Data volume used %")
    network: NetworkIo = Field(description="Host bytes since boot")


class ApplicationPerf(CamelModel):
    response_time: float | None = Field(description="Mean node execution time (ms) in the period")
    throughput: float = Field(description="Tasks finished per hour in the period")
    error_rate: float = Field(description="% of finished tasks that failed (0 when none finished)")
    uptime: float = Field(description="Seconds since this API replica started")


class BusinessPerf(CamelModel):
    task_completion_rate: float = Field(description="% of finished tasks that completed (0 when none finished)")
    average_execution_time: float | None
    cost_per_task: float | None = Field(description="Mean engine-recorded cost (USD) of tasks created")
    user_satisfaction: float | None = Field(description="Mean agent review rating (1-5)")


class PerfTrends(CamelModel):
    response_time: list[TrendData] | None = None
    throughput: list[TrendData] | None = None
    error_rate: list[TrendData] | None = None
    costs: list[TrendData] | None = None


class DashboardPerformance(CamelModel):
    period: PerfPeriod
    system: SystemLoad | None = Field(None, description="Only with metrics:read")
    application: ApplicationPerf
    business: BusinessPerf
    trends: PerfTrends


class Alert(CamelModel):
    id: str
    title: str
    description: str
    severity: Severity
    status: AlertStatus
    source: str
    created_at: datetime
    resolved_at: datetime | None = None
    acknowledged_by: str | None = None
    company_id: str | None = None
    task_id: str | None = None


class AlertSummary(CamelModel):
    total: int
    critical: int
    high: int
    medium: int
    low: int


class DashboardAlerts(CamelModel):
    alerts: list[Alert]
    summary: AlertSummary
