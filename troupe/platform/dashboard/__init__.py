"""Dashboard: stats, performance and alerts over the caller's companies (/api/dashboard)."""
