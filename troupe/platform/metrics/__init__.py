"""System, performance and business metrics (/api/metrics)."""
