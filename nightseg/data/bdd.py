"""BDD100K (Yu et al., CVPR 2020) and its 10K semantic-segmentation subset, in the official layout
(both unpack into the same ``bdd100k/`` folder):

    <root>/images/100k/{train,val}/<name>.jpg
    <root>/labels/bdd100k_labels_images_{train,val}.json     (2018 release) or
    <root>/labels/det_20/det_{train,val}.json                (2020 release)
    <root>/images/10k/{train,val,test}/<name>.jpg
    <root>/labels/sem_seg/masks/{train,val}/<name>.png       (19 Cityscapes train ids, 255 ignore)

The paper trains its CycleGAN on 6,000 day + 6,000 night clear-weather BDD100K images chosen by
the ``timeofday`` attribute, and its segmenter on BDD10K day images, testing on BDD10K night.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from nightseg.core.errors import ConfigError, DataError
from nightseg.data.catalog import CITYSCAPES_CLASSES, DataCatalog, Sample, SampleSet
from nightseg.data.folders import complete, empty, files, layout_error, paired, require_dirs, unlabelled

LABEL_FILES = ("labels/bdd100k_labels_images_{split}.json", "labels/det_20/det_{split}.json")
EXPECTED_100K = ("images/100k/{train,val} and labels/bdd100k_labels_images_{train,val}.json "
                 "or labels/det_20/det_{train,val}.json")
EXPECTED_10K = "images/10k/{train,val} and labels/sem_seg/masks/{train,val}/<name>.png"
WEATHERS = ("clear", "overcast", "partly cloudy", "rainy", "snowy", "foggy", "undefined")
TIMES = {"day": "daytime", "night": "night"}  # dawn/dusk and undefined are used by neither domain


@functools.lru_cache(maxsize=4)
def _attributes(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, str, str], ...]:
    """(name, timeofday, weather) per image of a labels JSON. The train file is ~1 GB, so keep it
    parsed for the process (a Hydra multirun builds the catalog once per job); the file's mtime
    and size in the key invalidate the cache when it changes."""
    try:
        with open(path, encoding="utf-8") as f:
            frames = json.load(f)
        out = []
        for frame in frames:
            attrs = frame.get("attributes") or {}
            out.append((frame["name"], attrs.get("timeofday", "undefined"),
                        attrs.get("weather", "undefined")))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: not a BDD100K labels file (a list of {{name, attributes: "
                        f"{{timeofday, weather}}}} frames): {type(e).__name__}: {e}") from None
    return tuple(out)


def bdd100k_attributes(root: Path, split: str) -> tuple[tuple[str, str, str], ...]:
    """(name, timeofday, weather) for every image of ``split``, from whichever labels release
    is present (the 2018 file first)."""
    for pattern in LABEL_FILES:
        path = root / pattern.format(split=split)
        if path.is_file():
            st = path.stat()
            return _attributes(str(path), st.st_mtime_ns, st.st_size)
    raise layout_error(root, EXPECTED_100K, root / LABEL_FILES[0].format(split=split))


def _weathers(weather: str | Sequence[str] | None) -> set[str] | None:
    if weather is None:
        return None
    wanted = {weather} if isinstance(weather, str) else {str(w) for w in weather}
    unknown = sorted(wanted - set(WEATHERS))
    if unknown:
        raise ConfigError(f"BDD100K weather {unknown} (data.translate_weather or data.catalog.weather): "
                          f"the weathers are {', '.join(WEATHERS)}, or null for any")
    return wanted


def bdd100k_day_night(root: str | Path, splits: Sequence[str] = ("train",),
                      weather: str | Sequence[str] | None = None, count: int | None = None,
                      on_missing: str = "raise") -> tuple[SampleSet, SampleSet]:
    """Day ("daytime") and night ("night") images of ``splits``, optionally of one ``weather``
    (paper: clear), each cut to the first ``count`` in name order (paper: 6000). BDD100K names are
    hashes, so name order is a fixed order that mixes drives."""
    splits = [splits] if isinstance(splits, str) else list(splits)
    root = require_dirs(root, [f"images/100k/{s}" for s in splits], EXPECTED_100K)
    wanted = _weathers(weather)
    pools: dict[str, list[Sample]] = {"day": [], "night": []}
    for split in splits:
        for name, time, w in sorted(bdd100k_attributes(root, split)):
            for domain, tod in TIMES.items():
                if time == tod and (wanted is None or w in wanted):
                    pools[domain].append(Sample(root / "images/100k" / split / name))
    sets = []
    for domain, samples in pools.items():
        if count is not None:
            if count > len(samples):
                raise ConfigError(f"BDD100K count={count} (data.translate_count or data.catalog.count): "
                                  f"only {len(samples)} {domain} images with weather {weather} in "
                                  f"{root} ({'+'.join(splits)}); lower it, add splits or relax weather")
            samples = samples[:count]
        what = f"{root} (100k {domain})"
        sets.append(SampleSet(f"bdd100k_{domain}", complete(samples, on_missing, what)))
    return sets[0], sets[1]


def build_bdd100k_catalog(root: str | Path, splits: Sequence[str] = ("train",),
                          weather: str | Sequence[str] | None = None, count: int | None = None,
                          on_missing: str = "raise") -> DataCatalog:
    """BDD100K as a translation source: translate_day/translate_night only (no pixel labels)."""
    day, night = bdd100k_day_night(root, splits, weather, count, on_missing)
    return DataCatalog(name="bdd100k", class_names=CITYSCAPES_CLASSES, translate_day=day,
                       translate_night=night, train=empty("bdd100k_train"))


def read_name_list(names: str | os.PathLike | Iterable[str] | None) -> set[str] | None:
    """Image stems from a text file (one name per line, ``#`` comments) or a list in config."""
    if names is None:
        return None
    if isinstance(names, (str, os.PathLike)):
        path = Path(names).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.night_list: {path} not found; give a text file with one image "
                              "name per line, a list of names, or null (no BDD10K night test set)")
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
        names = [ln for ln in lines if ln]
    return {Path(str(n)).stem for n in names}


def bdd10k_split(root: Path, split: str, on_missing: str = "raise") -> list[Sample]:
    masks = root / "labels/sem_seg/masks" / split
    return paired(files(root / "images/10k" / split, "*.jpg"), lambda img: masks / f"{img.stem}.png",
                  on_missing, f"{root} (10k {split})")


def build_bdd10k_catalog(root: str | Path, night_list: str | Iterable[str] | None = None,
                         on_missing: str = "raise") -> DataCatalog:
    """BDD10K segmentation: train and val from its splits; with ``night_list`` the listed images
    (from either split) become the test set ``bdd10k_night`` and are left out of train and val,
    so those hold day images only (the paper's protocol)."""
    root = require_dirs(root, ["images/10k/train", "images/10k/val", "labels/sem_seg/masks/train",
                               "labels/sem_seg/masks/val"], EXPECTED_10K)
    train, val = bdd10k_split(root, "train", on_missing), bdd10k_split(root, "val", on_missing)
    night = read_name_list(night_list)
    test: list[SampleSet] = []
    if night is None:
        train_set, val_set = SampleSet("bdd10k_train", train), SampleSet("bdd10k_val", val)
    else:
        # Compare with every listed image file, not only the complete samples: a night image
        # skipped for a missing label must not be reported as "not in BDD10K" as well.
        known = {p.stem for s in ("train", "val") for p in files(root / "images/10k" / s, "*.jpg")}
        unknown = sorted(night - known)
        if unknown:
            raise DataError(f"{night_list if isinstance(night_list, (str, os.PathLike)) else 'night_list'}: "
                            f"{len(unknown)} name(s) not among BDD10K train/val images in {root}, "
                            f"e.g. {unknown[:3]}; fix the list (image names, one per line)")
        test = [SampleSet("bdd10k_night", [s for s in train + val if s.image.stem in night],
                          domain="night")]
        train_set = SampleSet("bdd10k_train_day", [s for s in train if s.image.stem not in night])
        val_set = SampleSet("bdd10k_day_val", [s for s in val if s.image.stem not in night],
                            domain="day")
    return DataCatalog(
        name="bdd10k",
        class_names=CITYSCAPES_CLASSES,
        # BDD10K has no night pool for the translator apart from its night test images (which
        # must stay unseen); take translate_night from BDD100K (conf/data/bdd100k_bdd10k.yaml).
        translate_day=SampleSet("bdd10k_day", unlabelled([s.image for s in train_set.samples])),
        translate_night=empty("bdd10k_night_pool"),
        train=train_set,
        val=[val_set],
        test=test,
    )
