"""Run every benchmark, one after the other, each printing its figures and its
ratio against stock JupyterHub measured in the same run:

    python -m benchmarks            (or `make bench`)
    python -m benchmarks register   (only the ones named)
"""

import subprocess
import sys
import time

BENCHES = {
    "personalize": "benchmarks.bench_personalize",
    "register": "benchmarks.bench_register",
    "spawn": "benchmarks.bench_spawn",
    "sweep": "benchmarks.bench_sweep",
}


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n=== {name} " + "=" * (60 - len(name)), flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", BENCHES[name]])
        print(f"--- {name}: {time.perf_counter() - t0:.0f} s, exit {rc}", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"benchmarks that did not run to the end: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
