"""``make bench``: every benchmark against its baseline in the same run, printed as ratios."""

from __future__ import annotations

import importlib
import sys
import traceback

from bench.stack import troupe_stack

# Each module has run(stack) -> results and report(results) -> lines.
BENCHMARKS = [
    "bench.bench_http",
    "bench.bench_ws",
    "bench.bench_engine",
]


def main(argv: list[str]) -> int:
    selected = [b for b in BENCHMARKS if not argv or any(a in b for a in argv)]
    lines: list[str] = []
    failed = False
    with troupe_stack() as stack:
        for name in selected:
            module = importlib.import_module(name)
            print(f"running {name} ...", flush=True)
            try:
                lines += module.report(module.run(stack)) + [""]
            except Exception:
                failed = True
                traceback.print_exc()
                lines += [f"{name}: FAILED (traceback above)", ""]
    print("\n==== Troupe benchmarks ====\n" + "\n".join(lines), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
