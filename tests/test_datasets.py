"""Dataset families read their official layouts (tiny fake trees, plus real CamVid frames)."""

from __future__ import annotations

import logging
from pathlib import Path

import fake_layouts as fl
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nightseg.core.errors import ConfigError, DataError
from nightseg.data import bdd, camvid, cityscapes, dark_zurich, nighttime_driving, zju
from nightseg.data.catalog import CITYSCAPES_CLASSES, IGNORE_INDEX, DataCatalog
from nightseg.data.combine import combine_catalogs
from nightseg.data.io import SegmentationDataset, load_sample
from nightseg.training.config import validate

CONF = Path(__file__).resolve().parents[1] / "conf"
REAL_CAMVID = Path(__file__).resolve().parents[2] / "shared/data/camvid"


def names(sset) -> list[str]:
    return [s.image.name for s in sset.samples]


def label_values(sset, i: int = 0) -> set[int]:
    return set(np.unique(load_sample(sset.samples[i], sset.label_lut)["mask"]).tolist())


# --- BDD100K -----------------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["2018", "2020"])
def test_bdd100k_day_night_follow_timeofday(tmp_path, release):
    root = fl.make_bdd100k(tmp_path / "bdd100k", release)
    cat = bdd.build_bdd100k_catalog(root)
    # Name order, train split only; dawn/dusk and undefined belong to neither domain.
    assert names(cat.translate_day) == ["d1-clear.jpg", "d2-rainy.jpg", "d3-clear.jpg", "d4-clear.jpg"]
    assert names(cat.translate_night) == ["n1-clear.jpg", "n2-clear.jpg", "n3-snowy.jpg"]
    assert cat.translate_day.samples[0].image == root / "images/100k/train/d1-clear.jpg"
    assert not cat.train.samples and not cat.test


def test_bdd100k_weather_count_and_splits(tmp_path):
    root = fl.make_bdd100k(tmp_path / "bdd100k", "2020")
    day, night = bdd.bdd100k_day_night(root, weather="clear", count=2)
    assert names(day) == ["d1-clear.jpg", "d3-clear.jpg"]
    assert names(night) == ["n1-clear.jpg", "n2-clear.jpg"]
    day, night = bdd.bdd100k_day_night(root, splits=["train", "val"], weather=["clear", "snowy"])
    assert len(day) == 4 and names(night) == ["n1-clear.jpg", "n2-clear.jpg", "n3-snowy.jpg",
                                              "nv-clear.jpg"]
    with pytest.raises(ConfigError, match="count=3.*only 2 night"):
        bdd.bdd100k_day_night(root, weather="clear", count=3)
    with pytest.raises(ConfigError, match="weather.*sunny"):
        bdd.bdd100k_day_night(root, weather="sunny")


def test_bdd100k_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"bdd100k: expected images/100k/\{train,val\}.*NIGHTSEG_DATA_DIR"):
        bdd.build_bdd100k_catalog(tmp_path / "bdd100k")
    root = fl.make_bdd100k(tmp_path / "bdd100k")
    (root / "labels/bdd100k_labels_images_train.json").unlink()
    with pytest.raises(DataError, match="bdd100k_labels_images_train.json not found"):
        bdd.build_bdd100k_catalog(root)
    (root / "labels/bdd100k_labels_images_train.json").write_text("{not json")
    with pytest.raises(DataError, match="not a BDD100K labels file"):
        bdd.build_bdd100k_catalog(root)


def test_bdd100k_listed_image_missing_is_reported(tmp_path):
    root = fl.make_bdd100k(tmp_path / "bdd100k")
    (root / "images/100k/train/n1-clear.jpg").unlink()
    with pytest.raises(DataError, match="1 missing file.*n1-clear.jpg not found"):
        bdd.build_bdd100k_catalog(root)


# --- BDD10K ------------------------------------------------------------------------------------


def test_bdd10k_splits_and_labels(tmp_path):
    cat = bdd.build_bdd10k_catalog(fl.make_bdd10k(tmp_path / "bdd100k"))
    assert (len(cat.train), [s.name for s in cat.val], len(cat.val[0]), cat.test) == (
        3, ["bdd10k_val"], 2, [])
    assert cat.train.labelled and label_values(cat.train) == set(fl.TRAIN_IDS)


@pytest.mark.parametrize("as_file", [True, False])
def test_bdd10k_night_list_makes_the_night_test_set(tmp_path, as_file):
    root = fl.make_bdd10k(tmp_path / "bdd100k")
    night = ["t-night1.jpg", "v-night1"]  # with or without the extension
    if as_file:
        (tmp_path / "night.txt").write_text("# BDD10K night images\n" + "\n".join(night) + "\n")
        night = str(tmp_path / "night.txt")
    cat = bdd.build_bdd10k_catalog(root, night_list=night)
    assert [s.name for s in cat.test] == ["bdd10k_night"]
    assert sorted(s.name for s in cat.test[0].samples) == sorted(fl.BDD10K_NIGHT)
    assert [s.name for s in cat.train.samples] == ["t-day1", "t-day2"]
    assert [s.name for s in cat.val[0].samples] == ["v-day1"] and cat.val[0].name == "bdd10k_day_val"
    with pytest.raises(DataError, match=r"1 name\(s\) not among BDD10K.*nope"):
        bdd.build_bdd10k_catalog(root, night_list=["nope"])
    with pytest.raises(ConfigError, match="data.night_list: .*missing.txt not found"):
        bdd.build_bdd10k_catalog(root, night_list=str(tmp_path / "missing.txt"))


def test_image_without_label_is_raised_skipped_with_log_or_kept(tmp_path, caplog):
    root = fl.make_bdd10k(tmp_path / "bdd100k")
    (root / "labels/sem_seg/masks/train/t-day2.png").unlink()
    with pytest.raises(DataError, match=r"1 missing file.*t-day2.png not found \(label of t-day2.jpg\)"):
        bdd.build_bdd10k_catalog(root)
    with caplog.at_level(logging.WARNING):
        cat = bdd.build_bdd10k_catalog(root, on_missing="skip")
    assert len(cat.train) == 2 and "t-day2.png not found" in caplog.text
    assert len(bdd.build_bdd10k_catalog(root, on_missing="keep").train) == 3
    with pytest.raises(ConfigError, match="on_missing='ignore'"):
        bdd.build_bdd10k_catalog(root, on_missing="ignore")


# --- Cityscapes family -------------------------------------------------------------------------


def test_cityscapes_train_ids(tmp_path):
    cat = cityscapes.build_catalog(fl.make_cityscapes(tmp_path / "cs"))
    assert (len(cat.train), len(cat.val[0]), len(cat.translate_day), len(cat.translate_night)) == (3, 2, 3, 0)
    assert cat.train.label_lut is None and label_values(cat.val[0]) == set(fl.TRAIN_IDS)
    assert cat.train.samples[0].label.name == "aachen_000000_000000_gtFine_labelTrainIds.png"


def test_cityscapes_label_ids_are_mapped_to_train_ids(tmp_path):
    cat = cityscapes.build_catalog(fl.make_cityscapes(tmp_path / "cs", "labelIds"))
    assert label_values(cat.train) == {0, 1, 2, 13, 18, IGNORE_INDEX}
    lut = cityscapes.label_id_lut()
    assert [lut[i] for i in (7, 26, 33, 0, 34, 255)] == [0, 13, 18, 255, -1, -1]
    assert sum(v not in (-1, IGNORE_INDEX) for v in lut) == 19


def test_cityscapes_missing_layout(tmp_path):
    (tmp_path / "cs/leftImg8bit/train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"cs: expected leftImg8bit.*leftImg8bit/val not found"):
        cityscapes.build_catalog(tmp_path / "cs")


def test_nighttime_driving(tmp_path):
    cat = nighttime_driving.build_catalog(fl.make_nighttime_driving(tmp_path / "nd"))
    (test,) = cat.test
    assert (test.name, len(test), test.labelled) == ("nighttime_driving", 3, True)
    assert test.samples[0].label.name == "0_frame_0000_gtCoarse_labelTrainIds.png"
    assert label_values(test) == set(fl.TRAIN_IDS) and not cat.train.samples


def test_dark_zurich(tmp_path):
    root = fl.make_dark_zurich(tmp_path / "dz")
    cat = dark_zurich.build_catalog(root)
    counts = (len(cat.translate_day), len(cat.translate_night), len(cat.test[0]))
    assert counts == (fl.DARK_ZURICH["day"], fl.DARK_ZURICH["night"], fl.DARK_ZURICH["val"])
    assert cat.test[0].name == "dark_zurich_val" and label_values(cat.test[0]) == set(fl.TRAIN_IDS)
    twilight = dark_zurich.build_catalog(root, twilight_as_night=True)
    assert len(twilight.translate_night) == fl.DARK_ZURICH["night"] + fl.DARK_ZURICH["twilight"]
    with pytest.raises(DataError, match="dz2: expected rgb_anon"):
        dark_zurich.build_catalog(tmp_path / "dz2")


@pytest.mark.parametrize("labelled", [True, False])
def test_zju_layout(tmp_path, labelled):
    cat = zju.build_catalog(fl.make_zju(tmp_path / "zju", labelled))
    assert (len(cat.translate_day), len(cat.translate_night)) == (3, 2)
    assert [s.name for s in cat.test] == (["zju_night"] if labelled else [])
    if labelled:
        assert label_values(cat.test[0]) == set(fl.TRAIN_IDS)


# --- CamVid (fake) -----------------------------------------------------------------------------


@pytest.mark.parametrize("lists", [True, False])
def test_camvid_domains_and_classes(tmp_path, lists):
    cat = camvid.build_catalog(fl.make_camvid(tmp_path / "camvid", lists))
    assert cat.summary() == {"translate_day": 3, "translate_night": 2, "train": 3,
                             "val/camvid_day_val": 2, "test/camvid_dusk": 1, "test/camvid_day_test": 2}
    assert cat.class_names == camvid.CAMVID_CLASSES and cat.test[0].pred_lut is None
    assert label_values(cat.train) == {0, 3, 8, 10, IGNORE_INDEX}  # 11 (Unlabelled) -> ignore
    assert len(camvid.build_catalog(tmp_path / "camvid", day_test=False).test) == 1


def test_camvid_cityscapes19_scores_in_camvid_space(tmp_path):
    cat = camvid.build_catalog(fl.make_camvid(tmp_path / "camvid"), classes="cityscapes19")
    assert cat.class_names == CITYSCAPES_CLASSES
    # Training labels become train ids (Car -> car, Bicyclist -> bicycle); eval labels stay CamVid.
    assert label_values(cat.train) == {10, 0, 13, 18, IGNORE_INDEX}
    for sset in cat.val + cat.test:
        assert sset.eval_classes == camvid.CAMVID_CLASSES and label_values(sset) == {0, 3, 8, 10, 255}
        assert sset.pred_lut == [3, 4, 1, 1, 7, 2, 6, 6, 5, 5, 0, 9, 10, 8, 8, 8, 8, 10, 10]
    ds = SegmentationDataset(cat.train, num_classes=19)
    assert set(ds[0]["mask"].unique().tolist()) == {10, 0, 13, 18, IGNORE_INDEX}
    with pytest.raises(ConfigError, match="classes='camvid12'"):
        camvid.build_catalog(tmp_path / "camvid", classes="camvid12")


def test_camvid_mapping_file_in_root_is_used_and_checked(tmp_path):
    root = fl.make_camvid(tmp_path / "camvid")
    (root / camvid.MAPPING_FILE).write_text('{"gt_camvid_to_cs": {}, "pred_cs_to_camvid": {"0": 3}}')
    with pytest.raises(DataError, match="camvid11_to_cityscapes19.json: pred_cs_to_camvid must map"):
        camvid.build_catalog(root, classes="cityscapes19")


# --- combining catalogs and the data configs ---------------------------------------------------


def test_combine_checks_roles_and_classes(tmp_path):
    bdd10k = bdd.build_bdd10k_catalog(fl.make_bdd10k(tmp_path / "bdd100k"), night_list=fl.BDD10K_NIGHT)
    nd = nighttime_driving.build_catalog(fl.make_nighttime_driving(tmp_path / "nd"))
    cv = camvid.build_catalog(fl.make_camvid(tmp_path / "camvid"))
    sources = {"bdd10k": bdd10k, "nd": nd, "camvid": cv}
    cat = combine_catalogs("mix", sources, {"translate_night": "camvid", "train": "bdd10k",
                                            "test": ["bdd10k/bdd10k_night", "nd"]})
    assert isinstance(cat, DataCatalog) and cat.class_names == CITYSCAPES_CLASSES
    assert [s.name for s in cat.test] == ["bdd10k_night", "nighttime_driving"] and not cat.val
    with pytest.raises(ConfigError, match="sources.camvid: its 11 classes differ"):
        combine_catalogs("mix", sources, {"train": "bdd10k", "test": ["camvid"]})
    with pytest.raises(ConfigError, match=r"roles.train: 'bdd' is not one of the sources"):
        combine_catalogs("mix", sources, {"train": "bdd"})
    with pytest.raises(ConfigError, match="roles.translate_night: source 'bdd10k'.*has no"):
        combine_catalogs("mix", sources, {"train": "bdd10k", "translate_night": "bdd10k"})
    with pytest.raises(ConfigError, match="roles.test: 'nd/other'"):
        combine_catalogs("mix", sources, {"train": "bdd10k", "test": ["nd/other"]})
    with pytest.raises(ConfigError, match="sources.x: got dict, not a DataCatalog.*_convert_: all"):
        combine_catalogs("mix", {"x": {"name": "x"}}, {"train": "x"})


def _trees(data_dir: Path) -> None:
    fl.make_bdd100k(data_dir / "bdd100k")
    fl.make_bdd10k(data_dir / "bdd100k")
    (data_dir / "bdd100k/bdd10k_night.txt").write_text("\n".join(fl.BDD10K_NIGHT) + "\n")
    fl.make_nighttime_driving(data_dir / "nighttime_driving")
    fl.make_cityscapes(data_dir / "cityscapes")
    fl.make_dark_zurich(data_dir / "dark_zurich")
    fl.make_zju(data_dir / "zju")
    fl.make_camvid(data_dir / "camvid")
    fl.make_acdc(data_dir / "acdc")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("data")
    _trees(path)
    return path


EXPECTED_CONFIGS = {
    "bdd100k_bdd10k": ({"translate_day": 2, "translate_night": 2, "train": 2, "val/bdd10k_day_val": 1,
                        "test/bdd10k_night": 2, "test/nighttime_driving": 3}, ["data.translate_count=2"]),
    "bdd10k": ({"translate_day": 3, "translate_night": 0, "train": 3, "val/bdd10k_val": 2}, []),
    "cityscapes": ({"translate_day": 3, "translate_night": 0, "train": 3, "val/cityscapes_val": 2}, []),
    "dark_zurich": ({"translate_day": 3, "translate_night": 2, "train": 3, "val/cityscapes_val": 2,
                     "test/dark_zurich_val": 2, "test/nighttime_driving": 3}, []),
    "zju": ({"translate_day": 3, "translate_night": 2, "train": 3, "val/bdd10k_val": 2,
             "test/zju_night": 2}, []),
    "camvid": ({"translate_day": 3, "translate_night": 2, "train": 3, "val/camvid_day_val": 2,
                "test/camvid_dusk": 1, "test/camvid_day_test": 2}, ["data.classes=cityscapes19"]),
    "acdc": ({"translate_day": 3, "translate_night": 3, "train": 3, "val/cityscapes_val": 2,
              "test/acdc_night_val": 2, "test/dark_zurich_val": 2, "test/nighttime_driving": 3}, []),
}


def _compose(name: str, overrides: list[str]):
    """The main config with data=``name``, as the command line composes it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"data={name}", "logger=csv", *overrides])


@pytest.mark.parametrize("name", sorted(EXPECTED_CONFIGS))
def test_data_configs_instantiate(name, data_dir, monkeypatch):
    monkeypatch.setenv("NIGHTSEG_DATA_DIR", str(data_dir))
    expected, overrides = EXPECTED_CONFIGS[name]
    cfg = _compose(name, overrides)
    cat = instantiate(cfg.data.catalog)
    assert cat.summary() == expected
    assert cat.num_classes == cfg.data.num_classes == 19
    validate(cfg)  # the shared keys every data config carries, checked as nightseg.run does


def test_paper_config_needs_its_night_list(data_dir, monkeypatch):
    monkeypatch.setenv("NIGHTSEG_DATA_DIR", str(data_dir))
    cfg = _compose("bdd100k_bdd10k", ["data.night_list=/nowhere/night.txt", "data.translate_count=2"])
    with pytest.raises(Exception, match="data.night_list: /nowhere/night.txt not found") as info:
        instantiate(cfg.data.catalog)
    # Hydra wraps the error; the cause is ours.
    assert isinstance(info.value, ConfigError) or isinstance(info.value.__cause__, ConfigError)


# --- real CamVid -------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason=f"real CamVid not found at {REAL_CAMVID}")
def test_real_camvid_counts_values_and_mapping():
    cat = camvid.build_catalog(REAL_CAMVID, classes="cityscapes19")
    assert cat.summary() == {"translate_day": 305, "translate_night": 62, "train": 305,
                             "val/camvid_day_val": 101, "test/camvid_dusk": 62,
                             "test/camvid_day_test": 171}
    assert {camvid.sequence(s) for s in cat.translate_night.samples} == {"0001TP"}
    assert {camvid.sequence(s) for s in cat.test[1].samples} == {"Seq05VD"}
    # The mapping shipped with the data equals the embedded copy.
    assert camvid.load_mapping(REAL_CAMVID)["pred_cs_to_camvid"] == camvid.MAPPING["pred_cs_to_camvid"]
    assert camvid.load_mapping(REAL_CAMVID)["gt_camvid_to_cs"] == camvid.MAPPING["gt_camvid_to_cs"]
    raw = load_sample(cat.test[0].samples[0])["mask"]  # dusk frame, raw CamVid values
    assert raw.shape == (360, 480) and set(np.unique(raw).tolist()) <= set(range(12))
    dusk = load_sample(cat.test[0].samples[0], cat.test[0].label_lut)["mask"]
    assert np.array_equal(dusk == IGNORE_INDEX, raw == camvid.UNLABELLED)
    train = load_sample(cat.train.samples[0], cat.train.label_lut)["mask"]
    raw_train = load_sample(cat.train.samples[0])["mask"]
    lut = np.asarray(cat.train.label_lut)
    assert np.array_equal(train, lut[raw_train]) and set(np.unique(train).tolist()) <= set(range(19)) | {255}
    assert np.all(train[raw_train == 3] == 0) and np.all(train[raw_train == 8] == 13)  # road, car
