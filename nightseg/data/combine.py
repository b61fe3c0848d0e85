"""Assembling catalogs: layout checks and image/label pairing shared by the dataset families, and
combining roles from several catalogs into one.

The paper mixes datasets: the translator learns from BDD100K day/night images, the segmenter
trains on BDD10K day images and is tested on BDD10K night and Nighttime Driving.
:func:`combine_catalogs` expresses that in config (``conf/data/bdd100k_bdd10k.yaml``): Hydra
instantiates each source catalog through its ``_target_``, then this picks the roles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from nightseg.data.catalog import DataCatalog, Sample, SampleSet
from nightseg.utils import ConfigError, DataError

log = logging.getLogger(__name__)

# What a family does with an image whose label (or a listed image itself) is missing:
# raise (the default), skip (log each one and leave it out) or keep (leave the sample as is so the
# dataset inspector reports the missing file with every other problem).
ON_MISSING_CHOICES = ("raise", "skip", "keep")
ROLES = ("translate_day", "translate_night", "train", "val", "test")


def layout_error(root: Path, expected: str, missing: Path | str | None = None) -> DataError:
    """The one-line error for a dataset root that is absent or not in the expected layout."""
    what = f" ({missing} not found)" if missing is not None else ""
    return DataError(f"{root}: expected {expected}{what}; set data.catalog.root (or "
                     "NIGHTSEG_DATA_DIR, the parent of all dataset roots) to where the dataset is")


def require_dirs(root: str | Path, subdirs: Iterable[str], expected: str) -> Path:
    """``root`` as a Path, after checking it and each of ``subdirs`` exist."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise layout_error(root, expected, root)
    for sub in subdirs:
        if not (root / sub).is_dir():
            raise layout_error(root, expected, root / sub)
    return root


def check_on_missing(on_missing: str) -> None:
    if on_missing not in ON_MISSING_CHOICES:
        raise ConfigError(f"data.catalog.on_missing={on_missing!r}: choose one of "
                          f"{', '.join(ON_MISSING_CHOICES)}")


def files(folder: Path, pattern: str) -> list[Path]:
    """Files under ``folder`` matching ``pattern`` (may contain ``*/``), sorted for a fixed order."""
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def strip_suffix(name: str, suffix: str) -> str:
    """``name`` without ``suffix`` (e.g. ``_leftImg8bit.png``); the name itself if it lacks it."""
    return name[: -len(suffix)] if suffix and name.endswith(suffix) else name


def complete(samples: list[Sample], on_missing: str, what: str) -> list[Sample]:
    """``samples`` after checking every image and label file exists.

    A missing file is never dropped silently: it raises (naming the first few and the count),
    is logged and left out (``skip``), or kept for the inspector to report (``keep``).
    """
    check_on_missing(on_missing)
    if on_missing == "keep":
        return samples
    missing: list[str] = []
    kept: list[Sample] = []
    for s in samples:
        bad = [f"{p} not found" + (f" (label of {s.image.name})" if p == s.label else "")
               for p in (s.image, s.label) if p is not None and not p.is_file()]
        missing.extend(bad)
        if not bad:
            kept.append(s)
    if not missing:
        return samples
    if on_missing == "raise":
        shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{what}: {len(missing)} missing file(s): {shown}. Restore them, or set "
                        "data.on_error=skip to leave those images out (python -m "
                        "nightseg.data.inspect lists every problem)")
    for m in missing:
        log.warning("skipped %s: %s", what, m)
    log.warning("%s: skipped %d of %d images with missing files", what, len(samples) - len(kept),
                len(samples))
    return kept


def paired(images: list[Path], label_of, on_missing: str, what: str) -> list[Sample]:
    """Samples pairing each image with the label path ``label_of(image)``, checked by
    :func:`complete`."""
    return complete([Sample(img, label_of(img)) for img in images], on_missing, what)


def unlabelled(images: list[Path]) -> list[Sample]:
    return [Sample(img) for img in images]


def empty(name: str) -> SampleSet:
    """A role the dataset does not provide (e.g. Cityscapes has no night images)."""
    return SampleSet(name, [])


# --- combining catalogs --------------------------------------------------------------------------


def combine_catalogs(name: str, sources: Mapping[str, DataCatalog],
                     roles: Mapping[str, object]) -> DataCatalog:
    """A catalog whose roles come from several source catalogs.

    ``roles`` maps ``translate_day``/``translate_night``/``train`` to one source name and
    ``val``/``test`` to a list of ``source`` (all that source's val/test sets) or
    ``source/set_name`` (one set). A role left out is empty. Sources feeding labelled roles
    (train, val, test) must share their class list: that is the list the segmenter predicts.
    """
    sources = {str(k): v for k, v in dict(sources).items()}
    for key, cat in sources.items():
        if not isinstance(cat, DataCatalog):
            # Without _convert_: all, OmegaConf turns the instantiated dataclasses back into configs.
            raise ConfigError(f"data.catalog.sources.{key}: got {type(cat).__name__}, not a "
                              "DataCatalog; give it a catalog _target_ and set _convert_: all on "
                              "data.catalog")
    roles = dict(roles)
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ConfigError(f"data.catalog.roles: unknown role(s) {unknown}; roles are {', '.join(ROLES)}")

    def source(role: str, ref: object) -> DataCatalog:
        if not isinstance(ref, str) or ref.split("/")[0] not in sources:
            raise ConfigError(f"data.catalog.roles.{role}: {ref!r} is not one of the sources "
                              f"{sorted(sources)}; name a key of data.catalog.sources")
        return sources[ref.split("/")[0]]

    def single(role: str) -> tuple[str | None, SampleSet]:
        ref = roles.get(role)
        if ref is None:
            return None, empty(f"{name}_{role}")
        cat = source(role, ref)
        sset = getattr(cat, role)
        if not sset.samples:
            raise ConfigError(f"data.catalog.roles.{role}: source {ref!r} ({cat.name}) has no "
                              f"{role} images; pick a source that has them")
        return ref, sset

    def many(role: str) -> list[tuple[str, SampleSet]]:
        refs = roles.get(role) or []
        refs = [refs] if isinstance(refs, str) else list(refs)
        out = []
        for ref in refs:
            cat = source(role, ref)
            sets = getattr(cat, role)
            if "/" in ref:
                wanted = ref.split("/", 1)[1]
                sets = [s for s in sets if s.name == wanted]
                if not sets:
                    raise ConfigError(f"data.catalog.roles.{role}: {ref!r}: source has no {role} set "
                                      f"{wanted!r}; its sets are {[s.name for s in getattr(cat, role)]}")
            elif not sets:
                raise ConfigError(f"data.catalog.roles.{role}: source {ref!r} ({cat.name}) has no "
                                  f"{role} sets; pick a source that has them")
            out.extend((ref.split("/")[0], s) for s in sets)
        return out

    _, day = single("translate_day")
    _, night = single("translate_night")
    train_ref, train = single("train")
    val, test = many("val"), many("test")

    # The class list is the train source's (or the first labelled source's); every labelled role
    # must agree, or the segmenter would be scored against labels in another class space.
    labelled = ([train_ref] if train_ref else []) + [ref for ref, _ in val + test]
    if not labelled:
        raise ConfigError("data.catalog.roles: no train, val or test source; a catalog needs "
                          "at least one labelled role")
    first = labelled[0].split("/")[0]
    classes = sources[first].class_names
    for ref in labelled:
        other = sources[ref.split("/")[0]]
        if other.class_names != classes:
            raise ConfigError(f"data.catalog.sources.{ref.split('/')[0]}: its {other.num_classes} "
                              f"classes differ from source {first!r}'s {len(classes)}; configure "
                              "the sources for the same classes (e.g. CamVid classes=cityscapes19)")
    return DataCatalog(name, classes, day, night, train, [s for _, s in val], [s for _, s in test])
