"""Look at the synthetic dataset: a preview grid (day | night | label per scene) and statistics.

``python -m nightseg.data.synthetic --preview docs/synthetic_samples.png --stats 200``
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from nightseg.data.synthetic.build import check_seed, check_size
from nightseg.data.synthetic.render import SPLITS


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: a preview grid (day | night | label per scene) and dataset statistics."""
    parser = argparse.ArgumentParser(prog="python -m nightseg.data.synthetic",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--preview", type=Path, help="write a PNG grid of N scenes (day | night | label)")
    parser.add_argument("--stats", type=int, metavar="N",
                        help="print class frequencies, luma and speed over N scenes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("ROWS", "COLS"))
    parser.add_argument("--n", type=int, default=8, help="scenes in the preview")
    parser.add_argument("--split", default="train", choices=SPLITS, help="whose scenes to show")
    args = parser.parse_args(argv)
    seed, size = check_seed(args.seed), check_size(args.size)
    if args.preview is None and args.stats is None:
        parser.error("nothing to do: give --preview PATH and/or --stats N")
    if args.preview is not None:
        from nightseg.data.synthetic.stats import preview

        preview(args.preview, seed, size, args.n, args.split)
        print(f"wrote {args.preview}")
    if args.stats is not None:
        from nightseg.data.synthetic.stats import print_stats

        print_stats(seed, size, args.stats, args.split)


if __name__ == "__main__":
    main()
