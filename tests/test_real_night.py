"""Real night images (issue 9): the Nighttime Driving split, night labels in CamVid's classes, the
camvid_night preset end to end, and re-scoring cached models on changed test sets."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import fake_layouts as fl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from nightseg.core.errors import ConfigError, DataError
from nightseg.data import nighttime_driving as nd
from nightseg.data.camvid import CAMVID_CLASSES
from nightseg.data.catalog import Sample, SampleSet
from nightseg.data.datamodules import SegmentationDataModule, TranslationDataModule
from nightseg.data.inspect_dataset import main as inspect_main
from nightseg.run import run
from tests.conftest import SHARED_DATA, compose_cfg

REAL_ND = SHARED_DATA / "nighttime_driving"


def _names(samples) -> list[str]:
    return [s.image.name for s in samples]


# --- the split --------------------------------------------------------------------------------


def test_split_is_disjoint_complete_and_deterministic(tmp_path):
    root = fl.make_nighttime_driving(tmp_path / "nd", n=7)
    images = nd.night_images(root)
    shuffled = images[:]
    random.Random(0).shuffle(shuffled)
    translate, scored = nd.split_night(shuffled, 3)
    assert (translate, scored) == nd.split_night(images, 3)  # input order does not matter
    assert [p.name[:12] for p in translate] == ["0_frame_0000", "0_frame_0001", "0_frame_0002"]
    assert not set(translate) & set(scored) and sorted(translate + scored) == sorted(images)

    cat = nd.build_catalog(root, translate_count=3)
    assert _names(cat.translate_night.samples) == [p.name for p in translate]
    assert _names(cat.test[0].samples) == [p.name for p in scored]
    assert all(s.label is None for s in cat.translate_night.samples)  # unlabelled for the GAN
    assert _names(nd.build_catalog(root, translate_count=3).test[0].samples) == _names(
        cat.test[0].samples)


@pytest.mark.parametrize("count", [-1, 7, 2.5, True])
def test_split_must_leave_images_to_score(tmp_path, count):
    root = fl.make_nighttime_driving(tmp_path / "nd", n=7)
    with pytest.raises(ConfigError, match=r"data.night_translate_count.*from 0 to 6"):
        nd.build_catalog(root, translate_count=count)


def test_test_root_elsewhere_is_scored_whole_and_never_the_translator_images(tmp_path):
    root = fl.make_nighttime_driving(tmp_path / "nd", n=5)
    other = fl.make_nighttime_driving(tmp_path / "other", n=4, start=100)
    cat = nd.build_catalog(root, test_root=other, translate_count=2)
    assert len(cat.translate_night) == 2
    assert all(s.image.is_relative_to(root) for s in cat.translate_night.samples)
    assert _names(cat.test[0].samples) == [p.name for p in nd.night_images(other)]
    # A test folder that holds the translator's images too (a copy of the whole set): excluded.
    shutil.copytree(root, tmp_path / "copy")
    again = nd.build_catalog(root, test_root=tmp_path / "copy", translate_count=2)
    assert len(again.test[0]) == 3
    assert not set(_names(again.test[0].samples)) & set(_names(again.translate_night.samples))


def test_night_labels_are_read_as_camvid_classes(tmp_path):
    root = fl.make_nighttime_driving(tmp_path / "nd", n=2)
    cat = nd.build_catalog(root, classes="camvid11", resize=[32, 56])
    assert cat.class_names == CAMVID_CLASSES
    dm = SegmentationDataModule([], test_sets=cat.test, num_classes=11)
    batch = next(iter(dm.test_dataloader()[0]))
    assert tuple(batch["image"].shape[-2:]) == (32, 56)  # the set's own size
    # Cityscapes road, sidewalk, building, car, bicycle, ignore -> CamVid road, pavement,
    # building, car, bicyclist, ignore.
    cv = {n: i for i, n in enumerate(CAMVID_CLASSES)}
    expected = {cv["road"], cv["pavement"], cv["building"], cv["car"], cv["bicyclist"], 255}
    assert set(torch.unique(batch["mask"]).tolist()) == expected
    with pytest.raises(ConfigError, match="classes='camvid' for Nighttime Driving"):
        nd.build_catalog(root, classes="camvid")


def test_cityscapes_label_outside_the_map_is_named(tmp_path):
    root = fl.make_nighttime_driving(tmp_path / "nd", n=1)
    label = next((root / nd.LABELS).iterdir())
    fl.write_label(label, [0, 19])  # 19 is no Cityscapes train id
    cat = nd.build_catalog(root, classes="camvid11")
    dm = SegmentationDataModule([], test_sets=cat.test, num_classes=11)
    with pytest.raises(DataError, match=rf"{label.name}: unknown label values \[19\]"):
        next(iter(dm.test_dataloader()[0]))


def test_translator_domains_keep_their_own_size(tmp_path):
    day = SampleSet("day", [Sample(fl.write_image(tmp_path / "d.png", (20, 30)))])
    night = SampleSet("night", [Sample(fl.write_image(tmp_path / "n.png", (40, 90)))],
                      resize=(36, 64))
    dm = TranslationDataModule(day, night, resize=(32, 48), crop=None, hflip=False)
    item = dm.train_dataloader().dataset[0]
    assert tuple(item["day"].shape[-2:]) == (32, 48) and tuple(item["night"].shape[-2:]) == (36, 64)


# --- inspect and bad input --------------------------------------------------------------------


def test_inspect_covers_the_split_and_names_a_label_of_another_size(tmp_path, capsys):
    root = fl.make_nighttime_driving(tmp_path / "nd", n=5)
    opts = ["-o", "translate_count=2", "-o", "classes=camvid11"]
    labels = sorted((root / nd.LABELS).iterdir())
    for p in labels[:2]:  # the translator's images need no labels
        p.unlink()
    assert inspect_main(["nighttime_driving", str(root), *opts]) == 0
    out = capsys.readouterr().out
    assert "nighttime_driving_translate" in out and "no problems found" in out
    # A scored image whose label has another size, and one whose label is missing.
    wrong = labels[-1]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(wrong)
    labels[-2].unlink()
    assert inspect_main(["nighttime_driving", str(root), *opts]) == 1
    out = capsys.readouterr().out
    assert f"{wrong.name}: label size 5x5 differs from its image" in out
    assert "regenerate the label at the image size" in out
    assert f"{labels[-2].name}: label file not found; restore it, or remove its image" in out


def test_missing_night_label_stops_a_run_naming_the_file(tmp_path):
    root = fl.make_nighttime_driving(tmp_path / "nd", n=3)
    label = sorted((root / nd.LABELS).iterdir())[-1]
    label.unlink()
    with pytest.raises(DataError, match=rf"{label.name} not found.*data.on_error=skip"):
        nd.build_catalog(root, translate_count=1)


# --- camvid_night end to end: changing the test sets never retrains ---------------------------


def _data_tree(root: Path) -> Path:
    fl.make_camvid(root / "camvid")
    fl.make_nighttime_driving(root / "nighttime_driving", n=4)
    return root


def _tiny(data_dir: Path, cache: Path, *extra: str) -> list[str]:
    """The camvid_night preset at smoke sizes on fake trees."""
    return ["experiment=camvid_night", "logger=csv", f"paths.data_dir={data_dir}",
            f"paths.cache_dir={cache}", "data.resize=[32,48]", "data.night_resize=[32,56]",
            "data.translate_crop=[32,32]", "data.night_translate_count=2", "data.batch_size=2",
            "data.num_workers=0", "model.translator.generator.ngf=8",
            "model.translator.generator.n_blocks=1", "model.translator.discriminator.ndf=8",
            "model.translator.epochs_constant=1", "model.translator.epochs_decay=0",
            "model.translator.num_sample_images=1", "model.segmenter.max_epochs=1",
            "strategy.num_panels=1", *extra]


@pytest.mark.slow
def test_camvid_night_rescores_changed_test_sets_without_training(tmp_path):
    data = _data_tree(tmp_path / "data")
    cache = tmp_path / "cache"
    first = {s: run(compose_cfg(_tiny(data, cache, *s.split())), tmp_path / s.replace(" ", "_"))
             for s in ("strategy=night2day_inference", "strategy=augment night_count=3")}
    assert first["strategy=night2day_inference"]["stages"]["translator"] == "trained"
    assert first["strategy=augment night_count=3"]["stages"]["segmenter"] == "trained"
    sets = {r["test_set"] for r in first["strategy=augment night_count=3"]["results"]}
    assert sets == {"camvid_day_val", "camvid_dusk", "camvid_day_test", "nighttime_driving"}
    nd_row = next(r for r in first["strategy=night2day_inference"]["results"]
                  if r["test_set"] == "nighttime_driving" and r["condition"] == "night2day")
    assert set(nd_row["per_class_iou"]) == set(CAMVID_CLASSES)

    # Another night test folder (other frames), no CamVid day test set, the whole data tree
    # moved elsewhere: every stage comes from the cache, and the new test set is scored.
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    other = fl.make_nighttime_driving(tmp_path / "other_night", n=3, start=500)
    for strategy in first:
        m = run(compose_cfg(_tiny(moved, cache, *strategy.split(),
                                  f"data.night_test_root={other}",
                                  "data.catalog.sources.camvid.day_test=false")),
                tmp_path / ("again_" + strategy.replace(" ", "_")))
        assert set(m["stages"].values()) <= {"cached", "unused"}, m["stages"]
        assert m["checkpoints"] == first[strategy]["checkpoints"]
        assert {r["test_set"] for r in m["results"]} == {"camvid_day_val", "camvid_dusk",
                                                        "nighttime_driving"}
        # Unchanged sets score exactly as before; the night set is the new folder's.
        before = {(r["test_set"], r["condition"]): r["miou"] for r in first[strategy]["results"]}
        for r in m["results"]:
            if r["test_set"] == "camvid_dusk":
                assert r["miou"] == before[("camvid_dusk", r["condition"])]

    # What a model learns from does change the key: another translator night image count.
    m = run(compose_cfg(_tiny(data, cache, "strategy=night2day_inference",
                              "data.night_translate_count=1")), tmp_path / "new_split")
    assert m["stages"]["translator"] == "trained" and m["stages"]["segmenter"] == "cached"


def test_camvid_night_config_composes_against_fake_trees(tmp_path):
    data = _data_tree(tmp_path / "data")
    cfg = compose_cfg(["experiment=camvid_night", f"paths.data_dir={data}",
                       "data.night_translate_count=1"])
    cat = instantiate(cfg.data.catalog)
    assert cat.summary() == {"translate_day": 3, "translate_night": 1, "train": 3,
                             "val/camvid_day_val": 2, "test/camvid_dusk": 1,
                             "test/camvid_day_test": 2, "test/nighttime_driving": 3}
    assert cat.num_classes == cfg.data.num_classes == cfg.model.segmenter.num_classes == 11
    assert cat.translate_night.resize == cat.test[-1].resize == (180, 320)
    # The preset's default split needs more night images than this fake tree has.
    with pytest.raises(Exception, match="data.night_translate_count") as info:
        instantiate(compose_cfg(["experiment=camvid_night", f"paths.data_dir={data}"]).data.catalog)
    assert isinstance(info.value, ConfigError) or isinstance(info.value.__cause__, ConfigError)


# --- the real 23 images ----------------------------------------------------------------------


@pytest.mark.skipif(not REAL_ND.is_dir(), reason=f"real Nighttime Driving not found at {REAL_ND}")
def test_real_nighttime_driving_split_and_inspection(capsys):
    cat = nd.build_catalog(REAL_ND, translate_count=11, classes="camvid11", resize=[180, 320])
    frames = [int(s.image.name.split("_")[2]) for s in cat.translate_night.samples]
    scored = [int(s.image.name.split("_")[2]) for s in cat.test[0].samples]
    # As experiments/camvid_night/README.md states: frames 0075-0374 train the translator,
    # frames 0432-1120 are scored.
    assert (len(frames), frames[0], frames[-1]) == (11, 75, 374)
    assert (len(scored), scored[0], scored[-1]) == (12, 432, 1120)
    assert inspect_main(["nighttime_driving", str(REAL_ND), "-o", "translate_count=11",
                         "-o", "classes=camvid11"]) == 0
    assert "960x540" in capsys.readouterr().out
