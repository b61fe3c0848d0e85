"""Cityscapes (Cordts et al., CVPR 2016) in its official layout: the day-time source of the 19
train classes that every other dataset here is scored in.

    <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png
                                  (or, when a split has no labelTrainIds, *_gtFine_labelIds.png)

labelTrainIds files are produced by cityscapesScripts' createTrainIdLabelImgs; without them the
34 official label ids are mapped to train ids here (:data:`LABEL_ID_TO_TRAIN_ID`).
Cityscapes has no night images: ``translate_night`` is empty, combine it with a night source.
"""

from __future__ import annotations

from pathlib import Path

from nightseg.data.catalog import CITYSCAPES_CLASSES, IGNORE_INDEX, DataCatalog, SampleSet
from nightseg.data.folders import empty, files, paired, require_dirs, strip_suffix, unlabelled

EXPECTED = ("leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and gtFine/{train,val}/<city>/"
            "*_gtFine_labelTrainIds.png (or *_gtFine_labelIds.png)")

# cityscapesScripts helpers/labels.py: label id -> train id for the 19 evaluated classes; every
# other id of 0..33 is void (ignored). License plate (id -1) is never drawn in the label images.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
NUM_LABEL_IDS = 34


def label_id_lut() -> list[int]:
    """256-entry LUT from Cityscapes label ids to train ids: 0..33 known (void ids -> 255), any
    other value (including 255, i.e. -1 stored as uint8) is reported as unknown."""
    lut = [-1] * 256
    for i in range(NUM_LABEL_IDS):
        lut[i] = LABEL_ID_TO_TRAIN_ID.get(i, IGNORE_INDEX)
    return lut


def cityscapes_split(root: Path, split: str, on_missing: str = "raise",
                     name: str | None = None) -> SampleSet:
    """One labelled split, with labelTrainIds where the split has them, else labelIds + LUT."""
    images = files(root / "leftImg8bit" / split, "*/*_leftImg8bit.png")
    gt = root / "gtFine" / split
    use_train_ids = any(gt.glob("*/*_gtFine_labelTrainIds.png"))
    suffix = "_gtFine_labelTrainIds.png" if use_train_ids else "_gtFine_labelIds.png"

    def label_of(img: Path) -> Path:
        return gt / img.parent.name / (strip_suffix(img.name, "_leftImg8bit.png") + suffix)

    samples = paired(images, label_of, on_missing, f"{root} ({split})")
    return SampleSet(name or f"cityscapes_{split}", samples,
                     label_lut=None if use_train_ids else label_id_lut(), domain="day")


def build_catalog(root: str | Path, on_missing: str = "raise") -> DataCatalog:
    """Cityscapes: translate_day and train from the train split, val = [cityscapes_val]."""
    root = require_dirs(root, ["leftImg8bit/train", "leftImg8bit/val", "gtFine/train", "gtFine/val"],
                        EXPECTED)
    train = cityscapes_split(root, "train", on_missing)
    val = cityscapes_split(root, "val", on_missing)
    return DataCatalog(
        name="cityscapes",
        class_names=CITYSCAPES_CLASSES,
        translate_day=SampleSet("cityscapes_day", unlabelled([s.image for s in train.samples])),
        translate_night=empty("cityscapes_night"),
        train=train,
        val=[val],
        test=[],
    )
