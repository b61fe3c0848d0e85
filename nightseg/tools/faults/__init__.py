"""The fault-injection harness behind python -m nightseg.faults (experiments/reliability)."""
