"""System settings, backup and restore (/api/settings)."""
