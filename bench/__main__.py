"""``make bench``: every benchmark against its baseline in the same run, printed as ratios."""

from __future__ import annotations

import importlib
import sys
import time
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
    began = time.monotonic()
    with troupe_stack() as stack:
        for name in selected:
            print(f"running {name} ...", flush=True)
            started = time.monotonic()
            section: list[str] = []
            try:  # a failing section (even one that does not import) never stops the others
                module = importlib.import_module(name)
                section = module.report(module.run(stack))
            except Exception:
                failed = True
                traceback.print_exc()
                section += [f"{name}: FAILED (traceback above)"]
            section += [f"  ({name} took {time.monotonic() - started:.0f} s)", ""]
            print("\n".join(section), flush=True)  # printed as it ends too, in case a later section hangs
            lines += section
        # Before the stack's teardown, so a failing teardown cannot swallow the report.
        print(f"\n==== Troupe benchmarks ({time.monotonic() - began:.0f} s in all) ====\n" + "\n".join(lines),
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
