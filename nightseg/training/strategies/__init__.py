"""The paper's two strategies and their combination, as plain linear code over the stages in
nightseg.training.stages."""

from nightseg.training.strategies import augment, augment_night2day, night2day_inference

# The Hydra config names the strategy (strategy.name); this dict is the only lookup.
STRATEGIES = {
    "night2day_inference": night2day_inference.run,
    "augment": augment.run,
    "augment_night2day": augment_night2day.run,
}
