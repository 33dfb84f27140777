"""Run the Alembic migrations programmatically.

``upgrade(url)`` brings a database to the newest revision of every branch
(``alembic upgrade heads``). A session-level Postgres advisory lock, held on a
separate connection for the duration of the upgrade, serialises concurrent
starters (several Serve replicas booting at once).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import URL, make_url

ALEMBIC_INI = Path(__file__).with_name("alembic.ini")

# Fixed key for pg_advisory_lock (bigint); ASCII "TROUPEDB".
MIGRATION_LOCK_KEY = 0x54524F5550454442

DRIVER = "postgresql+psycopg"


def normalize_url(database_url: str | URL) -> str:
    """Return ``database_url`` as a ``postgresql+psycopg://`` URL string.

    Accepts ``postgres://``, ``postgresql://`` and ``postgresql+<driver>://``
    URLs. A unix-socket directory may be given as ``?host=/path`` (kept as is)
    or libpq-style as a percent-encoded host (``postgresql://u@%2Fpath/db``),
    which is moved into the ``host`` query parameter.
    """
    url = make_url(database_url) if isinstance(database_url, str) else database_url
    backend = url.drivername.split("+", 1)[0]
    if backend not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url.render_as_string(hide_password=True)}")
    host = url.host
    query = dict(url.query)
    if host and host.lower().startswith("%2f"):
        host = None
        query.setdefault("host", unquote(url.host))
    url = URL.create(
        DRIVER,
        username=url.username,
        password=url.password,
        host=host,
        port=url.port,
        database=url.database,
        query=query,
    )
    return url.render_as_string(hide_password=False)


def _config(url: str):
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    # ConfigParser interpolation: a literal '%' must be written '%%'.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _locked(database_url: str | URL, action) -> None:
    url = normalize_url(database_url)
    engine = create_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as lock_conn:
            lock_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            try:
                action(_config(url))
            finally:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
    finally:
        engine.dispose()


def upgrade(database_url: str) -> None:
    """Upgrade the database to ``heads`` (all branches), under an advisory lock."""
    from alembic import command

    _locked(database_url, lambda cfg: command.upgrade(cfg, "heads"))


def downgrade(database_url: str, revision: str = "base") -> None:
    """Downgrade the database to ``revision`` (default: drop everything), under the same lock."""
    from alembic import command

    _locked(database_url, lambda cfg: command.downgrade(cfg, revision))
