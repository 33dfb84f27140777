"""``serve run serve_app:app`` from the repository root; the entry point itself is
``troupe.serve_app`` (importable on every node, see serve_config.yaml)."""

from troupe.serve_app import app

__all__ = ["app"]
