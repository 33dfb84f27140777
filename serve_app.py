"""Serve entry point: ``serve run serve_app:app`` (or ``make run``).

Importing this module prepares the backends (embedded Postgres and Redis when
DATABASE_URL / REDIS_URL are unset, migrations applied) and binds the ingress.
"""

from troupe.config import get_settings
from troupe.infra.bootstrap import prepare
from troupe.platform.ingress import apply_serve_env, build

apply_serve_env()  # before `serve run` starts a local Ray, if it does
app = build(prepare(), replicas=get_settings().serve_replicas)
