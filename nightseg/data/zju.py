"""ZJU day/night driving images (the paper's own campus captures, Zhejiang University).

There is no public standard layout, so nightseg defines one (docs/datasets.md):

    <root>/day/<name>.{jpg,jpeg,png}       day images   (translator day domain)
    <root>/night/<name>.{jpg,jpeg,png}     night images (translator night domain)
    <root>/labels/day/<name>.png           optional: Cityscapes train ids (255 ignore)
    <root>/labels/night/<name>.png         optional: same, for the night images

When ``labels/<domain>/`` exists every image of that domain needs its label (same stem), and
the labelled domain becomes an evaluation set: night -> test ``zju_night``, day -> val ``zju_day``.
"""

from __future__ import annotations

from pathlib import Path

from nightseg.data.catalog import CITYSCAPES_CLASSES, DataCatalog, SampleSet
from nightseg.data.folders import check_on_missing, empty, paired, require_dirs, unlabelled

EXPECTED = "day/ and night/ image folders (*.jpg, *.png) and optionally labels/{day,night}/<name>.png"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def build_catalog(root: str | Path, on_missing: str = "raise") -> DataCatalog:
    """translate_day/translate_night from day/ and night/; labelled domains as val/test."""
    check_on_missing(on_missing)
    root = require_dirs(root, ["day", "night"], EXPECTED)
    found = {domain: images(root / domain) for domain in ("day", "night")}
    labelled: dict[str, SampleSet] = {}
    for domain, imgs in found.items():
        labels = root / "labels" / domain
        if labels.is_dir():
            samples = paired(imgs, lambda img, d=labels: d / f"{img.stem}.png", on_missing,
                             f"{root} ({domain})")
            labelled[domain] = SampleSet(f"zju_{domain}", samples, domain=domain)
    return DataCatalog(
        name="zju",
        class_names=CITYSCAPES_CLASSES,
        translate_day=SampleSet("zju_day_images", unlabelled(found["day"])),
        translate_night=SampleSet("zju_night_images", unlabelled(found["night"])),
        train=empty("zju_train"),
        val=[labelled["day"]] if "day" in labelled else [],
        test=[labelled["night"]] if "night" in labelled else [],
    )
