"""The embedded synthetic day/night driving dataset: nightseg's default data, generated on the spot.

Procedural street scenes (``layout``, objects in ``objects`` and ``vehicles``), rasterized once
(``scene``) and lit by day (``day``) and by night (``night``) from the same layout, labelled with
the 19 Cityscapes train ids (``render.render_scene``). Five disjoint splits mirror the paper's
data roles: unpaired day and night images for the CycleGAN, labelled day images to train and
validate ERF-PSPNet, and a labelled night test set whose samples carry the true day rendering of
the same scene (``Sample.reference``), so night->day translations can be scored.

``build.build_catalog`` (the config target ``nightseg.data.synthetic.build_catalog``) renders
what the cache lacks and returns the DataCatalog; ``stats`` measures the dataset.

Preview: ``python -m nightseg.data.synthetic --preview docs/synthetic_samples.png``.
"""

from nightseg.data.synthetic.build import build_catalog, dataset_dir
from nightseg.data.synthetic.render import GENERATOR_VERSION, SPLITS, render_scene

__all__ = ["GENERATOR_VERSION", "SPLITS", "build_catalog", "dataset_dir", "render_scene"]
