"""Serve entry point: ``serve deploy serve_config.yaml`` imports ``troupe.serve_app:app``
on the cluster (``serve run troupe.serve_app:app`` on one machine).

Inside the package so that every node that has Troupe installed can import it,
whatever its working directory. Importing it prepares the backends (embedded
Postgres and Redis when DATABASE_URL / REDIS_URL are unset, migrations applied)
and binds the ingress.
"""

from troupe.config import get_settings
from troupe.infra.bootstrap import prepare
from troupe.platform.ingress import apply_serve_env, build

apply_serve_env()  # before `serve run` starts a local Ray, if it does
app = build(prepare(), replicas=get_settings().serve_replicas)
