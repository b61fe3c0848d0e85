"""ACDC (issue 25): the reader on a fake tree in the published layout, invalid pixels in scoring,
the inspector, the Cityscapes -> ACDC night preset end to end, and benchmark submissions."""

from __future__ import annotations

import zipfile
from pathlib import Path

import fake_layouts as fl
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from nightseg.core.errors import ConfigError, DataError
from nightseg.data import acdc
from nightseg.data.catalog import IGNORE_INDEX
from nightseg.data.cityscapes import LABEL_ID_TO_TRAIN_ID
from nightseg.data.inspect_dataset import main as inspect_main
from nightseg.data.io import load_sample
from nightseg.models.segmentation import SegmentationModule
from nightseg.run import run
from tests.conftest import CONF_DIR, compose_cfg


def _names(sset) -> list[str]:
    return [s.image.name for s in sset.samples]


# --- the reader --------------------------------------------------------------------------------


def test_roles_from_the_published_layout(tmp_path):
    root = fl.make_acdc(tmp_path / "acdc")
    cat = acdc.build_catalog(root)  # night by default
    assert cat.summary() == {"translate_day": 3, "translate_night": 3, "train": 0,
                             "test/acdc_night_val": 2, "predict/acdc_night_test": 2}
    assert _names(cat.translate_night)[0] == "GOPR000_frame_000000_rgb_anon.png"
    assert {p.parent.parent.name for p in (s.image for s in cat.translate_day.samples)} == {"train_ref"}
    assert all(n.endswith("_rgb_ref_anon.png") for n in _names(cat.translate_day))
    val = cat.test[0]
    assert val.domain == "night" and val.labelled and not cat.predict[0].labelled
    assert val.samples[0].label.name == "GOPR000_frame_000000_gt_labelTrainIds.png"
    assert val.samples[0].invalid.name == "GOPR000_frame_000000_gt_invIds.png"

    both = acdc.build_catalog(root, conditions=["night", "fog"], day="none", resize=[8, 12])
    assert [s.name for s in both.test] == ["acdc_night_val", "acdc_fog_val"]
    assert [s.name for s in both.predict] == ["acdc_night_test", "acdc_fog_test"]
    assert len(both.translate_night) == 6 and len(both.translate_day) == 0
    assert both.test[1].domain is None and both.test[0].resize == (8, 12)


def test_invalid_pixels_are_ignored_in_scoring_or_scored(tmp_path):
    root = fl.make_acdc(tmp_path / "acdc")
    ignored = acdc.build_catalog(root).test[0].samples[0]
    scored = acdc.build_catalog(root, invalid="score").test[0].samples[0]
    assert scored.invalid is None
    raw = load_sample(scored)["mask"]
    mask = load_sample(ignored)["mask"]
    invalid = np.zeros_like(raw, dtype=bool)
    invalid[0, ::2] = True
    assert np.all(mask[invalid] == IGNORE_INDEX) and np.array_equal(mask[~invalid], raw[~invalid])
    assert not np.all(raw[invalid] == IGNORE_INDEX)  # the fake labels hold classes there
    # The masks are training files of a set that has them: a set's key changes with them.
    a = acdc.build_catalog(root).test[0]
    b = acdc.build_catalog(root, invalid="score").test[0]
    assert a.fingerprint() != b.fingerprint()


def test_layout_errors_and_missing_files(tmp_path, caplog):
    with pytest.raises(DataError, match=r"acdc2: expected rgb_anon/<condition>/.*set data.catalog.root"):
        acdc.build_catalog(tmp_path / "acdc2")
    root = fl.make_acdc(tmp_path / "acdc", conditions=("night",))
    with pytest.raises(DataError, match=r"rgb_anon/snow not found"):
        acdc.build_catalog(root, conditions=["snow"])
    with pytest.raises(ConfigError, match=r"data.conditions=\['dusk'\]: ACDC's conditions are fog"):
        acdc.build_catalog(root, conditions=["dusk"])
    with pytest.raises(ConfigError, match=r"data.invalid_pixels='drop'"):
        acdc.build_catalog(root, invalid="drop")
    mask = next((root / "gt/night/val").rglob("*_gt_invIds.png"))
    mask.unlink()
    with pytest.raises(DataError, match=rf"{mask.name} not found \(invalid mask of .*data.on_error=skip"):
        acdc.build_catalog(root)
    assert len(acdc.build_catalog(root, on_missing="skip").test[0]) == 1
    assert len(acdc.build_catalog(root, invalid="score").test[0]) == 2  # masks unused
    # Test images without labels are prediction only; val images without a gt folder are named.
    import shutil

    shutil.rmtree(root / "gt/night/val")
    with pytest.raises(DataError, match=r"gt/night/val not found"):
        acdc.build_catalog(root)


def test_inspector_covers_acdc_and_names_a_broken_invalid_mask(tmp_path, capsys):
    root = fl.make_acdc(tmp_path / "acdc")
    assert inspect_main(["acdc", str(root), "-o", "conditions=[night, fog]"]) == 0
    out = capsys.readouterr().out
    assert "acdc_fog_test" in out and "no problems found" in out
    masks = sorted((root / "gt/night/val").rglob("*_gt_invIds.png"))
    fl.write_label(masks[0], [0, 1], size=(10, 20))  # another size than its image
    fl.write_label(masks[1], [0, 7])  # not a 0/1 mask
    assert inspect_main(["acdc", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{masks[0]}: label size 20x10 differs from its image" in out
    assert f"{masks[1]}: unknown label values [7]" in out


# --- the Cityscapes -> ACDC data config and preset ----------------------------------------------


def _trees(data: Path, extra: bool = True) -> Path:
    fl.make_cityscapes(data / "cityscapes")
    fl.make_acdc(data / "acdc")
    if extra:
        fl.make_dark_zurich(data / "dark_zurich")
        fl.make_nighttime_driving(data / "nighttime_driving")
    return data


def test_preset_composes_scores_what_is_present(tmp_path):
    data = _trees(tmp_path / "full")
    cfg = compose_cfg(["experiment=cityscapes_acdc_night", f"paths.data_dir={data}"])
    cat = instantiate(cfg.data.catalog)
    assert cat.summary() == {"translate_day": 3, "translate_night": 3, "train": 3,
                             "val/cityscapes_val": 2, "test/acdc_night_val": 2,
                             "test/dark_zurich_val": 2, "test/nighttime_driving": 3}
    assert cat.translate_day.samples[0].image.name.endswith("_leftImg8bit.png")
    assert cat.test[0].resize == cat.test[1].resize == (540, 960)
    assert cfg.model.translator.generator.ngf == 64 and cfg.model.segmenter.max_epochs == 100
    # Without Dark Zurich and Nighttime Driving: ACDC night val alone; ACDC's references as the
    # translator's day domain.
    bare = _trees(tmp_path / "bare", extra=False)
    cat = instantiate(compose_cfg(["experiment=cityscapes_acdc_night", f"paths.data_dir={bare}",
                                   "data.translate_day=acdc"]).data.catalog)
    assert [s.name for s in cat.test] == ["acdc_night_val"]
    assert all(s.image.name.endswith("_rgb_ref_anon.png") for s in cat.translate_day.samples)
    with pytest.raises(Exception, match="roles.translate_day: source 'dark_zurich' has no data"):
        instantiate(compose_cfg(["experiment=cityscapes_acdc_night", f"paths.data_dir={bare}",
                                 "data.translate_day=dark_zurich"]).data.catalog)


@pytest.mark.slow
def test_preset_runs_end_to_end_on_fake_trees(tmp_path):
    data = _trees(tmp_path / "data")
    tiny = ["experiment=cityscapes_acdc_night", "logger=csv", f"paths.data_dir={data}",
            f"paths.cache_dir={tmp_path / 'cache'}", "data.resize=[32,48]",
            "data.night_resize=[32,56]", "data.train_crop=[32,32]", "data.translate_crop=[32,32]",
            "data.batch_size=2", "data.eval_batch_size=4", "data.num_workers=0",
            "model.translator.generator.ngf=8", "model.translator.generator.n_blocks=1",
            "model.translator.discriminator.ndf=8", "model.translator.epochs_constant=1",
            "model.translator.epochs_decay=0", "model.translator.num_sample_images=1",
            "model.segmenter.max_epochs=1", "strategy.num_panels=1",
            "strategy=augment_night2day", "night_count=2"]
    m = run(compose_cfg(tiny), tmp_path / "run")
    assert m["stages"] == {"translator": "trained", "generated_night": "trained",
                           "segmenter": "trained"}
    rows = {(r["test_set"], r["condition"]) for r in m["results"]}
    assert rows == {("cityscapes_val", "raw"), ("acdc_night_val", "raw"),
                    ("acdc_night_val", "night2day"), ("dark_zurich_val", "raw"),
                    ("dark_zurich_val", "night2day"), ("nighttime_driving", "raw"),
                    ("nighttime_driving", "night2day")}


# --- submissions -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("seg") / "model.ckpt"
    torch.manual_seed(0)
    module = SegmentationModule(num_classes=19)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def _submit(tmp_path, segmenter, inputs, *overrides):
    from nightseg.predict import predict

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("predict", overrides=[f"input={inputs}", f"output_dir={tmp_path / 'out'}",
                                    f"models.segmenter={segmenter}", "num_workers=0",
                                    "precision=32", *overrides])
    return predict(cfg)


def _test_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*_rgb_anon.png"))


def test_acdc_submission_names_folders_and_ids(tmp_path, segmenter):
    root = fl.make_acdc(tmp_path / "acdc", conditions=("night", "fog"))
    inputs = f"'{root}/rgb_anon/*/test/*/*_rgb_anon.png'"
    res = _submit(tmp_path, segmenter, inputs, "format=acdc")
    out = tmp_path / "out"
    names = sorted(p.name for p in (root / "rgb_anon").glob("*/test/*/*_rgb_anon.png"))
    assert len(names) == 4 and res["submission"] == str(out / "acdc_submission.zip")
    with zipfile.ZipFile(out / "acdc_submission.zip") as z:
        assert sorted(z.namelist()) == [f"labelTrainIds/{n}" for n in names]
    pred = Image.open(out / "labelTrainIds" / names[0])
    assert pred.mode == "L" and pred.size == (20, 12)  # the image's own size, plain ids
    train_ids = np.array(pred)
    assert train_ids.max() < 19
    assert not (out / "mask").exists() and not list(out.rglob("*.tmp"))

    # Cityscapes label ids: the same prediction, each train id as its label id.
    _submit(tmp_path / "label", segmenter, inputs, "format=acdc", "submission.ids=label")
    label_ids = np.array(Image.open(tmp_path / "label/out/labelIds" / names[0]))
    to_label = {t: i for i, t in LABEL_ID_TO_TRAIN_ID.items()}
    assert np.array_equal(label_ids, np.vectorize(to_label.get)(train_ids))
    assert set(np.unique(label_ids)) <= set(LABEL_ID_TO_TRAIN_ID)


def test_dark_zurich_submission_has_the_three_folders(tmp_path, segmenter):
    root = tmp_path / "dz"
    for i in range(2):
        fl.write_image(root / f"rgb_anon/test/night/GOPR0364/GOPR0364_frame_{i:06d}_rgb_anon.png",
                       seed=i)
    from nightseg.data.dark_zurich import build_catalog

    assert build_catalog(root).summary()["predict/dark_zurich_test"] == 2  # the test part alone
    _submit(tmp_path, segmenter, root / "rgb_anon/test/night", "format=dark_zurich",
            "submission.invalid_below=0.5")
    out = tmp_path / "out"
    names = _test_names(root)
    with zipfile.ZipFile(out / "dark_zurich_submission.zip") as z:
        assert sorted(z.namelist()) == sorted(f"{f}/{n}" for f in
                                              ("labelTrainIds", "labelTrainIds_invalid", "confidence")
                                              for n in names)
    ids = np.array(Image.open(out / "labelTrainIds" / names[0]))
    invalid = np.array(Image.open(out / "labelTrainIds_invalid" / names[0]))
    conf = np.array(Image.open(out / "confidence" / names[0]))
    assert conf.dtype == np.uint16 and conf.shape == ids.shape == (12, 20)
    low = conf < 0.5 * 65535
    assert np.array_equal(invalid[~low], ids[~low]) and np.all(invalid[low] == 255)
    assert ids.max() < 19 and conf.min() >= 65535 // 19  # a softmax's winner is at least 1/19


@pytest.mark.parametrize("make, override, message", [
    (lambda r: fl.write_image(r / "x_leftImg8bit.png"), "format=acdc",
     r"format=acdc: .*x_leftImg8bit.png is not a test image \(\*_rgb_anon.png\)"),
    (lambda r: [fl.write_image(r / f"{s}/a_rgb_anon.png") for s in ("s1", "s2")], "format=acdc",
     r"format=acdc: .*a_rgb_anon.png and .*a_rgb_anon.png have the same name"),
    (lambda r: fl.write_image(r / "a_rgb_anon.png"), "format=kitti", r"format=kitti: choose files"),
    (lambda r: fl.write_image(r / "a_rgb_anon.png"), "format=dark_zurich submission.ids=label",
     r"the Dark Zurich server reads train ids"),
])
def test_submission_input_errors(tmp_path, segmenter, make, override, message):
    make(tmp_path / "in")
    with pytest.raises(ConfigError, match=message):
        _submit(tmp_path, segmenter, tmp_path / "in", *override.split())
