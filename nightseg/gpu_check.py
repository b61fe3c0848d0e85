"""python -m nightseg.gpu_check (make gpu-check): what only a GPU can show, in one command.

    python -m nightseg.gpu_check                        # on the GPU: about 8 minutes at most
    python -m nightseg.gpu_check --device cpu --quick   # the dry run (make test runs it)

Runs the tests marked cuda, a smoke run of each strategy on the device, the device's scores
against CPU fp32 scores of the same models, the bench (inference eager and compiled, training
steps) and the training loader with many workers (nightseg.tools.gpu_check), and writes
gpu_check.json and summary.md into --out. Exit status 0 when every step passed (or was skipped),
1 when one failed. Where torch sees no GPU it says so and exits 0, unless the NVIDIA driver sees
one that torch cannot use: that is an error naming the fix (nightseg.infra.hardware).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from nightseg.core.cli import errors_as_one_line
from nightseg.infra.hardware import check_gpu_visible
from nightseg.tools.gpu_check import GpuCheck


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nightseg.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true",
                   help="every step, shrunk: one strategy, a small bench, a few loader batches")
    p.add_argument("--out", type=Path, default=None,
                   help="where gpu_check.json, summary.md, logs/ and the check's own stage cache go "
                        "(default: outputs/gpu_check/<date>_<time>)")
    p.add_argument("--budget-s", type=float, default=480.0, help="time for all steps (default 480)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        with errors_as_one_line([]):
            check_gpu_visible("auto")  # a GPU that torch cannot use: an error that names the fix
        print("gpu-check: no GPU here (torch.cuda.is_available() is False, and no NVIDIA driver "
              "sees one): nothing to check. The CPU dry run of the same steps: "
              "python -m nightseg.gpu_check --device cpu --quick")
        return 0
    out = args.out or Path("outputs/gpu_check") / time.strftime("%Y-%m-%d_%H-%M-%S")
    report = GpuCheck(args.device, out.absolute(), quick=args.quick, budget_s=args.budget_s).run()
    print((out / "summary.md").read_text())
    print(f"gpu-check: {out / 'gpu_check.json'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
