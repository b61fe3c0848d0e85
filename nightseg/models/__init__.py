"""LightningModules. They take primitive hyperparameters and build their own nets, so
``load_from_checkpoint`` works in any job without Hydra."""
