"""nightseg.export: the exportable pooling equals PyTorch's, every exported graph passes the
onnxruntime parity check at sizes whose feature maps the pooling bins do not divide, OnnxPipeline
predicts what the PyTorch pipeline predicts, int8 export runs, and the parity check fails loudly
on a wrong graph. Exports take seconds each: those tests share one module-scoped export and are
marked slow."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nightseg.core.errors import ConfigError
from nightseg.deploy import export as deploy_export
from nightseg.deploy import graphs, parity, quantize, runtime
from nightseg.inference.loading import checkpoints_from_options
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.models.cyclegan import CycleGANModule
from nightseg.models.segmentation import SegmentationModule
from nightseg.nets.erf_pspnet import adaptive_avg_pool2d_exportable
from tests.conftest import SMALL_D

# Small for speed, with the cases of 480x272 / 480x270 (34x60 maps): feature maps at 1/8 of
# 12x19 (bins 8 and 4 do not divide it), 12x19 padded from 94 rows, 19x12, 5x7 (padded from 36
# rows) and 2x3 (fewer cells than bins).
SIZES = [(96, 152), (94, 150), (150, 94), (36, 52), (12, 20)]
TINY_GENERATORS = {
    "resnet": {"_target_": "nightseg.nets.generator.ResnetGenerator", "ngf": 4, "n_blocks": 1},
    "light": {"_target_": "nightseg.nets.light_generator.LightGenerator", "ngf": 4, "n_blocks": 2,
              "expansion": 2},
}


@pytest.mark.parametrize("bins", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("hw", [(34, 60), (60, 34), (45, 80), (17, 30), (8, 8), (5, 7), (1, 1), (2, 3)])
def test_exportable_pooling_equals_adaptive_avg_pool2d(hw, bins):
    x = torch.randn(2, 5, *hw, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adaptive_avg_pool2d_exportable(x, bins), F.adaptive_avg_pool2d(x, bins),
                               rtol=1e-5, atol=1e-6)


def _translator(kind: str) -> CycleGANModule:
    torch.manual_seed(1)
    return CycleGANModule(generator=TINY_GENERATORS[kind], discriminator=SMALL_D).eval()


def _segmenter() -> SegmentationModule:
    torch.manual_seed(0)
    module = SegmentationModule(num_classes=5)
    # Trained-like batch-norm statistics, so the logits are not all alike (untrained running
    # stats of 0/1 with random weights give near ties everywhere).
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return module.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The graphs of a tiny segmenter + tiny ResnetGenerator translator (day2night left out: the
    same GeneratorGraph as night2day, other weights), and the light translator's night2day graph
    (its export-only code: instance norm, padding), each checked at SIZES on export. Exporting is
    the cost here (the dynamo exporter: ~10-20 s a graph on 2 cores)."""
    out = tmp_path_factory.mktemp("export")
    segmenter, resnet, light = _segmenter(), _translator("resnet"), _translator("light")
    manifest = deploy_export.export_models(out / "resnet", segmenter, resnet, sizes=SIZES,
                                    graphs=["segmenter", "night2day", "night2day_pipeline"])
    light_manifest = deploy_export.export_models(out / "light", segmenter, light, sizes=SIZES,
                                          graphs=["night2day"])
    return {"dir": out, "manifest": manifest, "light": light_manifest, "segmenter": segmenter,
            "resnet": resnet, "light_translator": light}


@pytest.mark.slow
def test_every_graph_passes_parity_at_non_dividing_sizes(exported):
    for manifest, names in ((exported["manifest"], ("segmenter", "night2day", "night2day_pipeline")),
                             (exported["light"], ("night2day",))):
        assert sorted(manifest["graphs"]) == sorted(names)
        for entry in manifest["graphs"].values():
            assert [r["size"] for r in entry["parity"]] == [list(s) for s in SIZES]
            for r in entry["parity"]:
                assert r.get("argmax_agreement", 1.0) >= parity.MIN_ARGMAX_AGREEMENT
                assert all(v < 1e-3 for k, v in r.items() if k.endswith("_max_abs_diff"))
    written = json.loads((exported["dir"] / "resnet" / "export.json").read_text())
    assert written["opset"] >= 17


@pytest.mark.slow
def test_onnx_pipeline_gives_the_torch_pipelines_argmax(exported):
    torch_pipe = SegmentationPipeline(exported["segmenter"], exported["resnet"]).eval()
    onnx_pipe = runtime.OnnxPipeline(exported["dir"] / "resnet" / "night2day_pipeline.onnx", threads=1)
    assert onnx_pipe.condition == torch_pipe.condition == "night2day"
    assert onnx_pipe.class_names == list(exported["segmenter"].hparams.class_names)
    assert list(onnx_pipe.parameters()) == []
    images = parity.parity_images(3, (90, 150), seed=5)  # batch and size not seen on export
    with torch.no_grad():
        ref = torch_pipe(images)
        day_ref, _ = torch_pipe.translate(images)
    logits, day = onnx_pipe.run(images)
    assert logits.shape == ref.shape and logits.dtype == torch.float32
    assert (onnx_pipe(images).argmax(1) == ref.argmax(1)).float().mean() >= 0.999
    torch.testing.assert_close(day, day_ref, atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resnet", "light"])
def test_onnx_translator_translates_as_the_torch_generator(exported, kind):
    """OnnxTranslator (runtime=onnxruntime's translator) in a pipeline: the same images as the
    torch generator's, at a batch and size not seen on export."""
    translator = exported["resnet" if kind == "resnet" else "light_translator"]
    ort = runtime.OnnxTranslator(exported["dir"] / kind / "night2day.onnx", "night2day", threads=1)
    images = parity.parity_images(3, (90, 150), seed=5)
    with torch.no_grad():
        ref = translator.translate(images, "night2day").clamp(0, 1)
    torch.testing.assert_close(ort.translate(images, "night2day"), ref, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="translates night2day, not day2night"):
        ort.translate(images, "day2night")


@pytest.mark.slow
def test_onnx_segmenter_is_a_raw_pipeline(exported):
    onnx_pipe = runtime.OnnxPipeline(exported["dir"] / "resnet" / "segmenter.onnx", threads=1)
    assert onnx_pipe.condition == "raw"
    images = parity.parity_images(2, (64, 100), seed=3)
    with torch.no_grad():
        ref = SegmentationPipeline(exported["segmenter"])(images)
    logits, day = onnx_pipe.run(images)
    assert day is None
    assert (logits.argmax(1) == ref.argmax(1)).float().mean() >= 0.999


@pytest.mark.slow
def test_parity_check_fails_loudly_on_a_wrong_graph(exported):
    other = _segmenter()
    with torch.no_grad():  # the head's last conv changed: a graph that is not this module's
        other.net.head[-1].weight.mul_(-1)
    with pytest.raises(parity.ParityError, match="argmax agrees"):
        parity.check_parity(graphs.SegmenterGraph(other), exported["dir"] / "resnet" / "segmenter.onnx",
                            sizes=[(36, 52)])


@pytest.mark.slow
def test_int8_export_runs_on_a_tiny_model(exported, tmp_path):
    import onnx

    fp32 = exported["dir"] / "resnet" / "night2day_pipeline.onnx"
    calibration = (parity.parity_images(1, (48, 64), seed=i).numpy() for i in range(3))
    q = quantize.quantize_int8(fp32, tmp_path / "pipe.int8.onnx", calibration)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    logits, day = runtime.OnnxPipeline(q, threads=1).run(parity.parity_images(2, (40, 56)))
    assert logits.shape == (2, 5, 40, 56) and day.shape == (2, 3, 40, 56)
    assert torch.isfinite(logits).all()


def test_checkpoints_from_a_run_directory_a_cache_key_and_a_path(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    seg = cache / "stages" / "segmenter" / "0123456789abcdef" / "model.ckpt"
    tr = cache / "stages" / "translator" / "fedcba9876543210" / "model.ckpt"
    for p in (seg, tr):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"")
    # A run started from tmp_path with relative cache paths, read from elsewhere.
    run = tmp_path / "outputs" / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {tmp_path}\n")
    (run / "metrics.json").write_text(json.dumps({"checkpoints": {
        "segmenter": str(seg.relative_to(tmp_path)), "translator": str(tr.relative_to(tmp_path)),
        "generated_night": "ignored"}}))
    monkeypatch.chdir(run)
    assert checkpoints_from_options(run) == {"segmenter": seg, "translator": tr}
    assert checkpoints_from_options(segmenter="0123456789abcdef", cache_dir=cache) == {"segmenter": seg}
    assert checkpoints_from_options(run, translator=str(seg)) == {"segmenter": seg, "translator": seg}
    with pytest.raises(ConfigError, match="does not exist"):
        checkpoints_from_options(segmenter="aaaaaaaaaaaaaaaa", cache_dir=cache)
    with pytest.raises(ConfigError, match="no metrics.json"):
        checkpoints_from_options(tmp_path)
    with pytest.raises(ConfigError, match="nothing to export"):
        checkpoints_from_options()


def test_calibration_images_come_from_training_sets_only(tmp_path):
    from types import SimpleNamespace

    sets = quantize.calibration_sets(SimpleNamespace(train="train", translate_night="night",
                                                   translate_day="day", test=["test"]), "segmenter")
    assert sets == ["train", "night"]
    for graph in graphs.GRAPHS:
        assert "test" not in quantize.calibration_sets(
            SimpleNamespace(train="train", translate_night="night", translate_day="day"), graph)


def test_parity_images_are_deterministic_and_in_range():
    a, b = parity.parity_images(2, (30, 40), seed=1), parity.parity_images(2, (30, 40), seed=1)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not np.allclose(a.numpy(), parity.parity_images(2, (30, 40), seed=2).numpy())
