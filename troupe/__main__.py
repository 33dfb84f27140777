"""``python -m troupe <command>``: run the service, migrate, manage users, read the outbox."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import signal
import sys
import time


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds exactly like Ctrl-C


def cmd_run(args: argparse.Namespace) -> None:
    """Everything started here stops on Ctrl-C or SIGTERM, at any point: Serve and Ray
    in the ``finally`` below, the embedded Postgres and Redis at exit (troupe.infra.embedded)."""
    signal.signal(signal.SIGTERM, _interrupt)  # before anything starts, so nothing is left half-started
    import ray
    from ray import serve

    from troupe.config import get_settings
    from troupe.infra.bootstrap import prepare
    from troupe.platform.ingress import apply_serve_env, build

    external = os.environ.get("RAY_ADDRESS") or None
    try:
        apply_serve_env()
        env = prepare()
        settings = get_settings()
        # "local": a Ray of our own unless RAY_ADDRESS names a cluster (never one found lying around).
        context = ray.init(address=external or "local", namespace="troupe",
                           include_dashboard=True, dashboard_host="127.0.0.1",
                           _metrics_export_port=settings.metrics_port,
                           runtime_env={"env_vars": env})
        signal.signal(signal.SIGTERM, _interrupt)
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(build(env, replicas=settings.serve_replicas), name="troupe", route_prefix="/")
        base = f"http://{settings.host}:{settings.port}"
        dashboard = context.dashboard_url or ""
        print(f"\nTroupe is running.\n  API docs:       {base}/docs\n  OpenAPI:        {base}/openapi.json"
              f"\n  Ray dashboard:  {'http://' + dashboard if dashboard and not dashboard.startswith('http') else dashboard}"
              f"\n  Metrics:        http://127.0.0.1:{settings.metrics_port}/metrics (Prometheus)\n  Data directory: {settings.data_dir}\nCtrl-C stops it.\n",
              flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nStopping Troupe...", flush=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop at a time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if external and ray.is_initialized():
            # On a cluster of someone else's, take our application off it; a Ray of our own
            # goes as a whole below (faster than draining replicas one by one).
            with contextlib.suppress(Exception):
                serve.shutdown()
        ray.shutdown()


def cmd_migrate(args: argparse.Namespace) -> None:
    from troupe.infra.bootstrap import prepare

    prepare(migrate=True)
    print("migrations applied")


def _run_with_db(coro_factory) -> None:
    import asyncio

    from troupe.errors import AppError
    from troupe.infra.bootstrap import prepare

    prepare(migrate=True)

    async def go() -> str:
        from troupe.db.session import dispose_engine

        try:
            return await coro_factory()
        finally:
            await dispose_engine()

    try:
        print(asyncio.run(go()))
    except AppError as exc:
        sys.exit(f"error: {exc.message}")


def _admin_password(from_stdin: bool) -> str:
    """The password from stdin (``--password-stdin``, one line) or a prompt: never an
    argument, which every user of the host can read (ps, shell history)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise SystemExit("create-admin: no terminal to prompt on; pipe the password with --password-stdin")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise SystemExit("create-admin: the passwords differ")
    if not password:
        raise SystemExit("create-admin: the password is empty")
    return password


def cmd_create_admin(args: argparse.Namespace) -> None:
    from troupe.platform.users.service import ensure_admin

    if args.password is not None:
        raise SystemExit("create-admin: --password is not accepted (a command line is visible to every user "
                         "of the host); you will be prompted, or pipe it with --password-stdin")
    password = _admin_password(args.password_stdin)
    _run_with_db(lambda: ensure_admin(email=args.email, password=password))


def cmd_promote(args: argparse.Namespace) -> None:
    from troupe.platform.users.service import promote_admin

    _run_with_db(lambda: promote_admin(email=args.email))


def cmd_outbox(args: argparse.Namespace) -> None:
    from troupe.infra.mail import read_outbox

    messages = read_outbox(args.to)[-args.last:] if args.last > 0 else read_outbox(args.to)
    if not messages:
        print("(outbox is empty)")
    for message in messages:
        print(f"--- {message['createdAt']}  to: {message['to']}\nSubject: {message['subject']}\n\n{message['body']}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="troupe")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start Ray, Serve and the API").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    admin = sub.add_parser("create-admin", help="create (or promote) a super admin account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password-stdin", action="store_true", help="read the password from stdin (one line)")
    # Refused with an explanation (argparse would otherwise call it an unknown argument).
    admin.add_argument("--password", help=argparse.SUPPRESS)
    admin.set_defaults(func=cmd_create_admin)
    promote = sub.add_parser("promote", help="make an existing account super admin")
    promote.add_argument("--email", required=True)
    promote.set_defaults(func=cmd_promote)
    outbox = sub.add_parser("outbox", help="print mail from the development outbox")
    outbox.add_argument("--to", help="only messages to this address")
    outbox.add_argument("--last", type=int, default=10, help="how many of the newest messages (0 = all)")
    outbox.set_defaults(func=cmd_outbox)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
