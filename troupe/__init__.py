"""Troupe: companies of AI agents on Ray, with durable records in Postgres."""

__version__ = "0.1.0"
