"""Using trained models outside a run: python -m nightseg.evaluate and python -m nightseg.predict
(nightseg/inference/loading.py names, checks and loads the models for both)."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from nightseg.core.errors import ConfigError
from nightseg.core.visualize import CITYSCAPES_PALETTE
from nightseg.deploy.pipelines import load_pipeline
from nightseg.inference.loading import Models, load_segmenter, load_translator, resolve
from nightseg.models.cyclegan import CycleGANModule
from nightseg.models.segmentation import SegmentationModule
from tests.conftest import CONF_DIR, REPO, SMALL_D, SMALL_G, compose_cfg, read_metrics


def compose_named(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=list(overrides))


def _save(module, path: Path, **hparams) -> Path:
    """What the stage cache publishes (Lightning's weights-only checkpoint), with ``hparams``
    changed as an edited file would have them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(),
                "hyper_parameters": {**dict(module.hparams), **hparams}}, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny models as the stage cache lays them out: stages/<kind>/<key>/<artefact>."""
    root = tmp_path_factory.mktemp("cache")
    torch.manual_seed(0)
    seg = _save(SegmentationModule(num_classes=19),
                root / "stages" / "segmenter" / "00000000000000a1" / "model.ckpt")
    tr = _save(CycleGANModule(generator=SMALL_G, discriminator=SMALL_D),
               root / "stages" / "translator" / "00000000000000b2" / "model.ckpt")
    gate = root / "stages" / "gate" / "00000000000000c3" / "gate.json"
    gate.parent.mkdir(parents=True)
    # Night below mean luma 0.3: the test frames below are dark (translated) or bright (kept).
    gate.write_text(json.dumps({"kind": "mean_luma", "threshold": 0.3, "fit_day_acc": 1.0,
                                "fit_night_acc": 1.0, "fit_images": 2}))
    return {"root": root, "segmenter": seg, "translator": tr, "gate": gate}


def _models_cfg(**values):
    return compose_named("predict", [f"models.{k}={v}" for k, v in values.items()]).models


# ---- naming and loading models -----------------------------------------------------------------
def _fake_run(tmp_path: Path, checkpoints: dict, conditions: list[str]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({
        "strategy": "x", "night_count": 4, "seed": 3, "translator_seed": 0,
        "results": [{"test_set": "s", "condition": c} for c in conditions],
        "checkpoints": {k: str(checkpoints[k]) for k in ("segmenter", "translator", "gate")}}))
    return run


def test_a_run_names_the_models_its_rows_were_scored_with(tmp_path, checkpoints):
    root = checkpoints["root"]
    run = _fake_run(tmp_path, checkpoints, ["raw", "night2day_gated"])
    m = resolve(_models_cfg(run=run), root)
    assert (m.segmenter, m.translator, m.gate) == (checkpoints["segmenter"],
                                                    checkpoints["translator"], checkpoints["gate"])
    assert m.run["night_count"] == 4
    # An explicit value wins; none drops the run's translator (and then its gate must go too).
    m = resolve(_models_cfg(run=run, gate="none"), root)
    assert m.translator == checkpoints["translator"] and m.gate is None
    with pytest.raises(ConfigError, match=r"models.gate=.*gate.json decides which images to "
                                          r"translate, but no translator is named"):
        resolve(_models_cfg(run=run, translator="none"), root)


def test_an_augment_runs_translator_is_not_put_in_front(tmp_path, checkpoints):
    """augment trains a translator for its images but scores raw: its rows had no translator."""
    run = _fake_run(tmp_path, checkpoints, ["raw"])
    m = resolve(_models_cfg(run=run), checkpoints["root"])
    assert m.translator is None and m.gate is None


def test_models_by_stage_key_or_stage_directory(checkpoints):
    root = checkpoints["root"]
    m = resolve(_models_cfg(segmenter="00000000000000a1", translator="00000000000000b2",
                            gate=checkpoints["gate"].parent), root)
    assert (m.segmenter, m.translator, m.gate) == (checkpoints["segmenter"],
                                                    checkpoints["translator"], checkpoints["gate"])
    with pytest.raises(ConfigError, match=r"^models.translator=00000000000000a1 is the key of a "
                                          r"segmenter, not of a translator; it belongs in "
                                          r"models.segmenter$"):
        resolve(_models_cfg(segmenter="00000000000000a1", translator="00000000000000a1"), root)
    with pytest.raises(ConfigError, match=r"models.segmenter=00000000000000ff: no segmenter with "
                                          r"that key in the stage cache .* check paths.cache_dir"):
        resolve(_models_cfg(segmenter="00000000000000ff"), root)


@pytest.mark.parametrize("values, message", [
    ({}, r"no segmenter named: give models.run=<run directory>, or models.segmenter="),
    ({"segmenter": "/nowhere/model.ckpt"}, r"models.segmenter=/nowhere/model.ckpt: the segmenter "
                                           r"file /nowhere/model.ckpt does not exist"),
    ({"run": "/nowhere"}, r"models.run=/nowhere: no metrics.json there; give the directory of a "
                          r"finished run"),
])
def test_missing_models_stop_with_one_line(checkpoints, values, message):
    with pytest.raises(ConfigError, match=message) as err:
        resolve(_models_cfg(**values), checkpoints["root"])
    assert "\n" not in str(err.value)


def test_mismatched_checkpoints_stop_with_one_line_naming_path_and_fix(tmp_path, checkpoints):
    seg, tr = checkpoints["segmenter"], checkpoints["translator"]
    with pytest.raises(ConfigError, match=rf"^models.segmenter={tr} is a translator checkpoint, not "
                                          r"a segmenter; it belongs in models.translator; give the "
                                          r"segmenter's model.ckpt"):
        load_segmenter(tr)
    with pytest.raises(ConfigError, match=rf"^models.translator={seg} is a segmenter checkpoint"):
        load_translator(seg)
    # Weights for 19 classes whose hyperparameters say 11: the head does not fit.
    edited = _save(load_segmenter(seg), tmp_path / "edited.ckpt", num_classes=11,
                   class_names=[f"c{i}" for i in range(11)])
    with pytest.raises(ConfigError, match=rf"^models.segmenter={edited}: its weights do not fit the "
                                          r"SegmentationModule its hyperparameters describe "
                                          r"\(.*size mismatch.*\); the file was edited") as err:
        load_segmenter(edited)
    assert "\n" not in str(err.value)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=rf"^models.segmenter={garbage}: cannot read it as a "
                                          r"checkpoint \(.*\); give a model.ckpt written by nightseg$"):
        load_segmenter(garbage)


def test_load_pipeline_runs_the_checkpoints(checkpoints):
    models = Models(checkpoints["segmenter"], checkpoints["translator"], checkpoints["gate"])
    loaded = load_pipeline(models)
    assert loaded.pipeline.condition == "night2day_gated"
    assert loaded.classes.num_classes == 19 and loaded.classes.names[0] == "road"
    ref = load_segmenter(checkpoints["segmenter"])
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(loaded.pipeline.segmenter(x), ref(x))
    with pytest.raises(ConfigError, match=r"^runtime=tensorrt: use torch or onnxruntime$"):
        load_pipeline(models, "tensorrt")


@pytest.mark.slow
def test_onnxruntime_runs_the_same_pipeline_exported_once(tmp_path, checkpoints):
    """runtime=onnxruntime: the checkpoints exported once into the stage cache (parity-checked),
    then run by onnxruntime in the torch modules' places, the gate included; evaluate and predict
    take it alike."""
    from nightseg.deploy.runtime import OnnxPipeline, OnnxTranslator

    cache = checkpoints["root"]  # the stage cache the predict call below names too
    models = Models(checkpoints["segmenter"], checkpoints["translator"], checkpoints["gate"])
    torch_pipe = load_pipeline(models).pipeline
    ort = load_pipeline(models, "onnxruntime", cache)
    assert isinstance(ort.pipeline.segmenter, OnnxPipeline)
    assert isinstance(ort.pipeline.translator, OnnxTranslator)
    assert ort.pipeline.condition == "night2day_gated" and ort.classes.names[0] == "road"
    graphs = sorted((cache / "stages" / "onnx").glob("*/graphs/*.onnx"))
    assert [g.name for g in graphs] == ["night2day.onnx", "segmenter.onnx"]
    stamps = [g.stat().st_mtime_ns for g in graphs]
    # A dark image (translated by the gate) and a bright one (kept), at a size whose 1/8 map the
    # pyramid pooling bins do not divide.
    x = torch.rand(2, 3, 72, 120) * 0.2
    x[1] += 0.7
    with torch.no_grad():
        inputs, picked = ort.pipeline.translate(x)
        ref_inputs, ref_picked = torch_pipe.translate(x)
        assert picked.tolist() == ref_picked.tolist() == [True, False]
        assert (inputs - ref_inputs).abs().max() < 1e-3
        agree = (ort.pipeline(x).argmax(1) == torch_pipe(x).argmax(1)).float().mean()
    assert agree >= 0.999
    load_pipeline(models, "onnxruntime", cache)  # exported once: reused, not rewritten
    assert [g.stat().st_mtime_ns for g in graphs] == stamps

    Image.fromarray(np.full((50, 70, 3), 20, np.uint8)).save(tmp_path / "dark.png")
    res = _predict(tmp_path, checkpoints, tmp_path / "dark.png", "runtime=onnxruntime")
    assert res["frames"] == 1 and (tmp_path / "out" / "night2day" / "dark.png").is_file()


# ---- predict -----------------------------------------------------------------------------------
def _write_video(path: Path, frames: int, hw=(48, 64), rate=12) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.height, s.width = hw
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((*hw, 3), 20 + 30 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _predict(tmp_path, checkpoints, inputs, *overrides):
    from nightseg.predict import predict

    cfg = compose_named("predict", [
        f"input={inputs}", f"output_dir={tmp_path / 'out'}", f"paths.cache_dir={checkpoints['root']}",
        f"models.segmenter={checkpoints['segmenter']}", f"models.translator={checkpoints['translator']}",
        "num_workers=0", *overrides])
    return predict(cfg)


def test_predict_folder_with_a_corrupt_file_and_a_video(tmp_path, checkpoints, capsys):
    inputs = tmp_path / "in"
    (inputs / "drive" / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 56, 3)) * 60).astype(np.uint8)).save(inputs / "night.png")
    Image.fromarray((rng.random((33, 45, 3)) * 255).astype(np.uint8)).save(
        inputs / "drive" / "a" / "odd.jpg")
    (inputs / "drive" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (inputs / "notes.txt").write_text("not an image")
    _write_video(inputs / "clip.mp4", frames=5)

    res = _predict(tmp_path, checkpoints, inputs, "batch_size=2")
    out = tmp_path / "out"
    err = capsys.readouterr().err
    assert res["skipped"] == [str(inputs / "drive" / "broken.png")]
    assert f"skipped {inputs / 'drive' / 'broken.png'}: cannot read it as an image" in err
    assert "skipped 1 unreadable file" in err.splitlines()[-1]
    assert res["frames"] == 2 + 5
    names = ["night", "drive/a/odd"] + [f"clip/{i:06d}" for i in range(5)]
    for name in names:
        for kind in ("mask", "overlay", "night2day"):
            assert (out / kind / f"{name}.png").is_file(), (kind, name)
    # At the frame's own size; the mask's pixels are class ids, its palette the Cityscapes colours.
    mask = Image.open(out / "mask" / "drive/a/odd.png")
    assert mask.mode == "P" and mask.size == (45, 33)
    assert np.array(mask).max() < 19
    assert np.array_equal(np.array(mask.getpalette()[:57]).reshape(19, 3), CITYSCAPES_PALETTE)
    assert Image.open(out / "overlay" / "drive/a/odd.png").size == (45, 33)
    assert not list(out.rglob("*.tmp"))  # atomic writes leave nothing behind

    import av

    assert res["videos"] == [str(out / "overlay" / "clip.mp4")]
    with av.open(str(out / "overlay" / "clip.mp4")) as c:
        s = c.streams.video[0]
        assert s.average_rate == Fraction(12) and (s.height, s.width) == (48, 64)
        assert sum(1 for _ in c.decode(s)) == 5


def test_predict_resize_gate_and_glob(tmp_path, checkpoints):
    """Frames resized for the models, outputs at their own size; with a gate only the dark frame
    is translated; a glob picks its files."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((50, 70, 3), 20, np.uint8)).save(inputs / "dark.png")
    Image.fromarray(np.full((50, 70, 3), 230, np.uint8)).save(inputs / "bright.png")
    Image.fromarray(np.full((50, 70, 3), 230, np.uint8)).save(inputs / "other.jpg")
    res = _predict(tmp_path, checkpoints, f"'{inputs}/*.png'", f"models.gate={checkpoints['gate']}",
                   "resize=[32,48]", "precision=32")
    out = tmp_path / "out"
    assert res["frames"] == 2 and res["skipped"] == []
    assert Image.open(out / "mask" / "dark.png").size == (70, 50)
    assert (out / "night2day" / "dark.png").is_file()
    assert not (out / "night2day" / "bright.png").exists()
    assert not (out / "mask" / "other.png").exists()


def test_predict_skips_a_video_it_cannot_read(tmp_path, checkpoints, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(inputs / "x.png")
    res = _predict(tmp_path, checkpoints, inputs)
    assert res["frames"] == 1 and res["skipped"] == [str(inputs / "broken.mp4")]
    assert f"skipped {inputs / 'broken.mp4'}: cannot read it as a video" in capsys.readouterr().err
    assert not (tmp_path / "out" / "overlay" / "broken.mp4").exists()
    assert not list((tmp_path / "out").rglob("*.tmp"))


@pytest.mark.parametrize("override, message", [
    ("precision=16", r"^precision=16: use auto \(bf16 where the hardware has it, else fp32\), "
                     r"bf16 \(autocast\) or 32 \(fp32\)$"),
    ("resize=[10,20]", r"^resize=\[10, 20\]: give \[rows, cols\], both at least 32"),
    ("batch_size=0", r"^batch_size=0: must be a positive integer$"),
    ("device=cuda:0" if not torch.cuda.is_available() else "device=nonsense",
     r"^device=(cuda:0: no CUDA device is visible here; use device=cpu|nonsense: use auto, cpu)"),
])
def test_predict_bad_options(tmp_path, checkpoints, override, message):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(ConfigError, match=message):
        _predict(tmp_path, checkpoints, tmp_path / "x.png", override)


@pytest.mark.slow
def test_predict_command_prints_one_line_for_a_translator_given_as_segmenter(tmp_path, checkpoints):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "x.png")
    proc = subprocess.run([sys.executable, "-m", "nightseg.predict", f"input={tmp_path / 'x.png'}",
                           f"models.segmenter={checkpoints['translator']}",
                           f"output_dir={tmp_path / 'out'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: models.segmenter={checkpoints['translator']} is a translator checkpoint, not a "
        "segmenter; it belongs in models.translator; give the segmenter's model.ckpt "
        "(stages/segmenter/<key>/model.ckpt, or models.run=<run directory>)")
    assert "Traceback" not in proc.stderr


# ---- evaluate ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_a_runs_models_gives_exactly_its_metrics(tmp_path, smoke_overrides, checkpoints):
    """The models of a smoke run (plain and gated), scored again by python -m nightseg.evaluate on
    the run's data: every result row, the translation scores and the gate's decisions equal the
    run's; on another data config (the night scenes also by day) the shared sets score alike;
    runtime=onnxruntime scores as the torch modules do."""
    from nightseg.evaluate import evaluate_models
    from nightseg.run import run

    for name, extra in (("plain", []), ("gated", ["strategy.gate=auto"])):
        trained = run(compose_cfg(smoke_overrides + extra), tmp_path / name)
        cfg = compose_named("evaluate", smoke_overrides + [f"models.run={tmp_path / name}"])
        again = evaluate_models(cfg, tmp_path / f"eval_{name}")
        assert again["results"] == trained["results"]
        assert again.get("translation") == trained.get("translation")
        assert again.get("gate") == trained.get("gate")
        assert again["checkpoints"] == trained["checkpoints"]
        assert again["stages"] == {k: "loaded" for k in trained["checkpoints"]}
        assert (again["strategy"], again["seed"]) == ("evaluate", 0)
        assert read_metrics(tmp_path / f"eval_{name}") == again
        assert set(again) == set(trained)  # the run's schema
        assert (tmp_path / f"eval_{name}" / "panels" / "synthetic_night_raw.png").is_file()

    # runtime=onnxruntime (fp32) scores as the torch modules in fp32 do, up to float rounding, with
    # a gate. The models are those of `checkpoints`, in its stage cache: exporting them is most of
    # the cost, and test_onnxruntime_runs_the_same_pipeline_exported_once exports the same graphs.
    tiny = [f"paths.cache_dir={checkpoints['root']}", f"models.segmenter={checkpoints['segmenter']}",
            f"models.translator={checkpoints['translator']}", f"models.gate={checkpoints['gate']}",
            "num_panels=0"]
    fp32 = evaluate_models(compose_named("evaluate", smoke_overrides + tiny + ["trainer.precision=32-true"]),
                           tmp_path / "e32")
    ort = evaluate_models(compose_named("evaluate", smoke_overrides + tiny + ["runtime=onnxruntime"]),
                          tmp_path / "eort")
    assert ort["checkpoints"] == fp32["checkpoints"]
    assert [(r["test_set"], r["condition"]) for r in ort["results"]] == \
        [(r["test_set"], r["condition"]) for r in fp32["results"]]
    for a, b in zip(ort["results"], fp32["results"], strict=True):
        assert abs(a["miou"] - b["miou"]) < 0.5 and abs(a["pixel_acc"] - b["pixel_acc"]) < 0.2, (a, b)
    assert ort["gate"]["decisions"] == fp32["gate"]["decisions"]

    # By keys, without the translator, on a data config with one more test set.
    seg_key = Path(trained["checkpoints"]["segmenter"]).parent.name
    cfg = compose_named("evaluate", smoke_overrides + [f"models.segmenter={seg_key}",
                                                       "data.day_test=true", "num_panels=0"])
    other = evaluate_models(cfg, tmp_path / "eval_other")
    rows = {(r["test_set"], r["condition"]): r for r in other["results"]}
    assert set(rows) == {("synthetic_day_val", "raw"), ("synthetic_night", "raw"),
                         ("synthetic_day_test", "raw")}
    assert other["seed"] is None and other["stages"] == {"translator": "unused",
                                                          "segmenter": "loaded"}
    for r in trained["results"]:
        if r["condition"] == "raw":
            assert rows[(r["test_set"], "raw")] == r


@pytest.mark.slow
def test_evaluate_refuses_a_segmenter_for_other_classes(tmp_path, smoke_overrides, checkpoints):
    from nightseg.evaluate import evaluate_models

    eleven = _save(SegmentationModule(num_classes=11, class_names=[f"c{i}" for i in range(11)]),
                   tmp_path / "seg11.ckpt")
    cfg = compose_named("evaluate", smoke_overrides + [f"models.segmenter={eleven}"])
    with pytest.raises(ConfigError, match=rf"^models.segmenter={eleven} predicts 11 classes \(c0, "
                                          r"c1, c2, c3, ...\) but data=synthetic has 19 \(road, "
                                          r"sidewalk, building, wall, ...\); evaluate it on data "
                                          r"with its classes, or give a segmenter trained on "
                                          r"data=synthetic$"):
        evaluate_models(cfg, tmp_path / "e")
