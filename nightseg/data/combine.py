"""Combining roles from several catalogs into one.

The paper mixes datasets: the translator learns from BDD100K day/night images, the segmenter
trains on BDD10K day images and is tested on BDD10K night and Nighttime Driving.
:func:`combine_catalogs` expresses that in config (``conf/data/bdd100k_bdd10k.yaml``): Hydra
instantiates each source catalog through its ``_target_``, then this picks the roles.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path

from nightseg.core.errors import ConfigError
from nightseg.data.catalog import DataCatalog, SampleSet
from nightseg.data.folders import empty

log = logging.getLogger(__name__)

ROLES = ("translate_day", "translate_night", "train", "val", "test")


def if_present(builder: str, root: str | Path, present: str | None = None,
               **options) -> DataCatalog | None:
    """``builder(root=root, **options)`` (a dotted name, e.g. nightseg.data.dark_zurich.build_catalog)
    when ``root`` (or ``root/present``) exists, else None: a source that is scored when it is
    there. combine_catalogs leaves a None source out of the val and test roles, with a log line."""
    where = Path(root).expanduser() / (present or "")
    if not where.exists():
        log.info("data: %s not found; its sets are not scored", where)
        return None
    module, _, name = builder.rpartition(".")
    return getattr(importlib.import_module(module), name)(root=root, **options)


def combine_catalogs(name: str, sources: Mapping[str, DataCatalog],
                     roles: Mapping[str, object]) -> DataCatalog:
    """A catalog whose roles come from several source catalogs.

    ``roles`` maps ``translate_day``/``translate_night``/``train`` to one source name and
    ``val``/``test`` to a list of ``source`` (all that source's val/test sets) or
    ``source/set_name`` (one set). A role left out is empty. Sources feeding labelled roles
    (train, val, test) must share their class list: that is the list the segmenter predicts.
    A source that is None (:func:`if_present` found no data) is left out of val and test.
    """
    sources = {str(k): v for k, v in dict(sources).items()}
    absent = {k for k, v in sources.items() if v is None}
    sources = {k: v for k, v in sources.items() if v is not None}
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
        if isinstance(ref, str) and ref.split("/")[0] in absent:
            raise ConfigError(f"data.catalog.roles.{role}: source {ref!r} has no data (its root "
                              "was not found); put the dataset there or name another source")
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
        refs = [r for r in refs if not (isinstance(r, str) and r.split("/")[0] in absent)]
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
