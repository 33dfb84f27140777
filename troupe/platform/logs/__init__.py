"""System log search (/api/logs) over the logs table."""
