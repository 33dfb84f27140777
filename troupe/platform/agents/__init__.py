"""Agents: CRUD, configuration validation, performance, clone, marketplace and reviews."""
