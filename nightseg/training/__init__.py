"""Training: the strategies, the stages they are built from (trained or reused through the stage
cache), the cache-key specs, the callbacks of every stage's Trainer, resume state, config and sweep
checks."""
