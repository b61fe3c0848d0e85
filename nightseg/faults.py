"""The fault-injection matrix: kill, interrupt, race, corrupt, fill and poison nightseg runs on the
smoke preset, then rerun the same command and check that nothing was lost.

    python -m nightseg.faults --seed 0 --trials 5 --out experiments/reliability
    python -m nightseg.faults --cases kill9-segmenter,corrupt-ckpt --trials 2

Every case starts from a fresh cache directory under ``--work``. "Survived" means: the same command
rerun finishes; every published artefact is whole (model checkpoints load, every generated image
decodes, no temporaries of atomic writes are left in the cache); metrics.json equals the one of an
uninterrupted reference run (deterministic mode; ``timings_s`` is left out of the comparison, it
is wall-clock time, and ``checkpoints`` is compared relative to the cache directory, whose path
differs per case). Kill times are drawn from ``--seed`` inside each stage's time window, measured
on the reference run from events of the run (the cache's "building <stage>" and "stage <stage>:
trained" log lines, the panels directory, the process's exit) and applied relative to the same
event of the run being killed, so a busy machine shifts the windows but not where the kill lands.

The disk-full and unwritable-cache cases mount a small tmpfs (root only); where mounting is not
allowed they are reported as skipped. ``make test`` covers the same failures without mounting
(tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from nightseg.tools.faults.harness import Harness, cases
from nightseg.tools.faults.runs import BASE, CaseResult, can_mount, markdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times and corruptions")
    p.add_argument("--trials", type=int, default=5, help="trials per case (default 5)")
    p.add_argument("--cases", default="", help="comma-separated case names or prefixes (default: all)")
    p.add_argument("--work", default=os.environ.get("NIGHTSEG_FAULTS_DIR", ".cache/faults"),
                   help="where the cases' caches and runs go (emptied per case)")
    p.add_argument("--out", default="", help="directory for faults.md and faults.json (default: --work)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)
    work = Path(args.work).absolute()
    h = Harness(work, args.seed, args.trials)
    matrix = cases(h)
    if args.list:
        print("\n".join(matrix))
        return 0
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    chosen = [name for name in matrix if not wanted or any(name.startswith(w) for w in wanted)]
    if not chosen:
        raise SystemExit(f"error: --cases {args.cases} matches none of: {', '.join(matrix)}")
    no_mount = can_mount(work) if any(c in ("disk-full", "unwritable-cache") for c in chosen) else ""
    t0 = time.monotonic()
    h.reference()
    out = Path(args.out).absolute() if args.out else work
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in chosen:
        criterion, fn = matrix[name]
        t = time.monotonic()
        if name in ("disk-full", "unwritable-cache") and no_mount:
            result = CaseResult(name, [], 0.0, criterion, skipped=no_mount)
        else:
            result = CaseResult(name, fn(), time.monotonic() - t, criterion)
        rows.append(result.row())
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        doc = {"seed": args.seed, "trials": args.trials, "windows_s": h.windows,
               "windows_ddp_s": {ranks: ref[1] for ranks, ref in h.refs.items() if ranks > 1},
               "command": " ".join(["python -m nightseg.run", *BASE]), "rows": rows,
               "wall_s": round(time.monotonic() - t0, 1)}
        (out / "faults.json").write_text(json.dumps(doc, indent=2) + "\n")
        (out / "faults.md").write_text(markdown(rows) + "\n")
    print()
    print(markdown(rows))
    print(f"\n{sum(r['survived'] for r in rows)}/{len(rows)} cases survived; {time.monotonic() - t0:.0f} s "
          f"in all; {out / 'faults.md'}")
    return 0 if all(r["survived"] or r["skipped"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
