"""``python -m troupe <command>``: run the service, migrate, manage users, read the outbox."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def cmd_run(args: argparse.Namespace) -> None:
    import ray
    from ray import serve

    from troupe.config import get_settings
    from troupe.infra.bootstrap import prepare
    from troupe.platform.ingress import build

    env = prepare()
    settings = get_settings()
    context = ray.init(address=os.environ.get("RAY_ADDRESS") or None, namespace="troupe",
                       include_dashboard=True, dashboard_host="127.0.0.1",
                       _metrics_export_port=settings.metrics_port,
                       runtime_env={"env_vars": env})
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build(env, replicas=settings.serve_replicas), name="troupe", route_prefix="/")
    base = f"http://{settings.host}:{settings.port}"
    dashboard = context.dashboard_url or ""
    print(f"\nTroupe is running.\n  API docs:       {base}/docs\n  OpenAPI:        {base}/openapi.json"
          f"\n  Ray dashboard:  {'http://' + dashboard if dashboard and not dashboard.startswith('http') else dashboard}"
          f"\n  Metrics:        http://127.0.0.1:{settings.metrics_port}/metrics (Prometheus)\n  Data directory: {settings.data_dir}\nCtrl-C stops it.\n",
          flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


def cmd_migrate(args: argparse.Namespace) -> None:
    from troupe.infra.bootstrap import prepare

    prepare(migrate=True)
    print("migrations applied")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="troupe")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start Ray, Serve and the API").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
