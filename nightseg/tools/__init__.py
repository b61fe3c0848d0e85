"""Tooling beside the library: the benchmark's internals and the fault-injection harness. The
library never imports it; the commands python -m nightseg.bench and python -m nightseg.faults do."""
