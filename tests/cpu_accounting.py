"""Where make test spends its time: a pytest plugin that appends, for every test, the CPU seconds
of the test process and of the processes it started and waited for, the wall time, the xdist
worker and the end time to a TSV file; and a summary of that file per test file (CPU, wall, which
worker ran it and when), the figures behind LONGEST_FIRST in tests/conftest.py.

    NIGHTSEG_TEST_CPU_LOG=/tmp/cpu.tsv .venv/bin/python -m pytest -q -n 2 --dist loadfile \\
        --no-loadscope-reorder -p tests.cpu_accounting
    .venv/bin/python -m tests.cpu_accounting /tmp/cpu.tsv

Children count once they have been waited for (getrusage RUSAGE_CHILDREN), as every test here waits
for the processes it starts.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections import defaultdict

import pytest


def _cpu() -> tuple[float, float]:
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = os.environ.get("NIGHTSEG_TEST_CPU_LOG")
    own0, children0 = _cpu()
    start = time.time()
    yield
    if path:
        own1, children1 = _cpu()
        end = time.time()
        with open(path, "a") as f:  # one short line per write: workers append side by side
            f.write(f"{item.nodeid}\t{own1 - own0:.2f}\t{children1 - children0:.2f}\t{end - start:.2f}"
                    f"\t{os.environ.get('PYTEST_XDIST_WORKER', '-')}\t{end:.2f}\n")


def summary(path: str) -> str:
    files: dict[str, dict] = defaultdict(lambda: {"own": 0.0, "children": 0.0, "wall": 0.0,
                                                  "start": float("inf"), "end": 0.0, "worker": ""})
    for line in open(path):
        nodeid, own, children, wall, worker, end = line.rstrip("\n").split("\t")
        f = files[nodeid.split("::")[0]]
        f["own"] += float(own)
        f["children"] += float(children)
        f["wall"] += float(wall)
        f["start"] = min(f["start"], float(end) - float(wall))
        f["end"] = max(f["end"], float(end))
        f["worker"] = worker
    t0 = min(f["start"] for f in files.values())
    header = ("CPU s", "own", "children", "wall s", "worker", "from", "to")
    rows = [" ".join(f"{h:>{w}}" for h, w in zip(header, (7, 7, 8, 7, 6, 6, 6), strict=True)) + "  file"]
    for name, f in sorted(files.items(), key=lambda kv: -(kv[1]["own"] + kv[1]["children"])):
        rows.append(f"{f['own'] + f['children']:7.1f} {f['own']:7.1f} {f['children']:8.1f} {f['wall']:7.1f} "
                    f"{f['worker']:>6} {f['start'] - t0:6.0f} {f['end'] - t0:6.0f}  {name}")
    total = sum(f["own"] + f["children"] for f in files.values())
    span = max(f["end"] for f in files.values()) - t0
    rows.append(f"{total:7.1f} CPU seconds in tests; the last test ended {span:.0f} s after the first began")
    return "\n".join(rows)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
