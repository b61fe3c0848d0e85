"""Tooling beside the library: the benchmark's internals, the fault-injection harness and the
report's wandb summary run. The library never imports it; the commands python -m nightseg.bench,
python -m nightseg.faults and python -m nightseg.report do."""
