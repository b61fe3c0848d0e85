"""Translation switched on only at night (the brightness gate) and both strategies together."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from nightseg.core.errors import ConfigError
from nightseg.data.datamodules import build_transform
from nightseg.data.io import SegmentationDataset
from nightseg.inference.evaluation import evaluate
from nightseg.inference.gate import BrightnessGate, fit_threshold, mean_luma
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.infra.cache import stage_cache
from nightseg.infra.job import Job
from nightseg.infra.tracking import CSVTracker
from nightseg.run import run
from nightseg.training.stages import get_gate, get_segmenter, get_translator
from tests.conftest import compose_cfg, read_metrics


def test_threshold_separates_and_prefers_the_darker_cut():
    t, day_acc, night_acc = fit_threshold([0.5, 0.6, 0.7], [0.1, 0.2])
    assert t == pytest.approx(0.35) and (day_acc, night_acc) == (1.0, 1.0)
    # Overlap: the best balanced accuracy (0.5 gets 2/3 of day and all night right)...
    t, day_acc, night_acc = fit_threshold([0.3, 0.6, 0.7], [0.1, 0.4])
    assert t == pytest.approx(0.5) and (day_acc, night_acc) == (pytest.approx(2 / 3), 1.0)
    # ...and of equally good cuts (0.3, 0.6, 0.8 all score 0.75) the darkest.
    assert fit_threshold([0.5, 0.9], [0.1, 0.7])[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="needs day and night images; got 0 day"):
        fit_threshold([], [0.1])


class _Invert:
    """A stand-in translator: 1 - x, so translated images are recognisable."""

    def translate(self, image, direction):
        assert direction == "night2day"
        return 1 - image


def test_gated_pipeline_translates_only_dark_images():
    dark, bright = torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), 0.8)
    batch = torch.stack([dark, bright, dark])
    gate = BrightnessGate(threshold=0.5, fit_day_acc=1.0, fit_night_acc=1.0, fit_images=2)
    pipe = SegmentationPipeline(nn.Identity(), _Invert(), gate=gate)
    assert pipe.condition == "night2day_gated"
    out, translated = pipe.translate(batch)
    assert translated.tolist() == [True, False, True]
    assert torch.allclose(out[0], 1 - dark) and torch.equal(out[1], bright)
    assert torch.equal(pipe(batch), out)  # the (identity) segmenter sees what translate() returns
    ungated = SegmentationPipeline(nn.Identity(), _Invert())
    out, translated = ungated.translate(batch)
    assert torch.allclose(out, 1 - batch) and translated.all() and ungated.condition == "night2day"
    raw = SegmentationPipeline(nn.Identity())
    assert raw.translate(batch) == (batch, None) and raw.condition == "raw"
    with pytest.raises(ValueError, match="give a translator"):
        SegmentationPipeline(nn.Identity(), gate=gate)
    assert mean_luma(batch).tolist() == pytest.approx([0.1, 0.8, 0.1])


def test_gate_option_is_checked(smoke_overrides):
    from nightseg.training.config import validate

    with pytest.raises(ConfigError, match="strategy.gate=always: use none .* or auto"):
        validate(compose_cfg(smoke_overrides + ["strategy.gate=always"]))
    with pytest.raises(ConfigError, match="strategy=augment_night2day needs night_count=N"):
        validate(compose_cfg(smoke_overrides + ["strategy=augment_night2day"]))


@pytest.mark.slow
def test_combined_strategy_reuses_every_stage_and_counts_gate_decisions(tmp_path, smoke_overrides):
    run(compose_cfg(smoke_overrides + ["strategy=night2day_inference"]), tmp_path / "n2d")
    aug = run(compose_cfg(smoke_overrides + ["strategy=augment", "night_count=8"]), tmp_path / "aug")
    both = run(compose_cfg(smoke_overrides + ["strategy=augment_night2day", "night_count=8",
                                              "strategy.gate=auto"]), tmp_path / "both")
    stages = dict(both["stages"])
    assert stages.pop("gate") in ("trained", "cached")
    assert stages == {"translator": "cached", "generated_night": "cached", "segmenter": "cached"}
    assert both["checkpoints"]["segmenter"] == aug["checkpoints"]["segmenter"]
    conditions = {(r["test_set"], r["condition"]) for r in both["results"]}
    assert conditions == {("synthetic_day_val", "raw"), ("synthetic_night", "raw"),
                          ("synthetic_night", "night2day_gated")}
    # The raw rows are augment's own.
    assert [r for r in both["results"] if r["condition"] == "raw"] == aug["results"]
    gate = read_metrics(tmp_path / "both")["gate"]
    night = gate["decisions"]["synthetic_night"]
    assert night["images"] == 4 and night["domain"] == "night"
    assert night["accuracy"] == pytest.approx(100.0 * night["translated"] / 4)
    assert gate["fit_images"] == 16 and 0 < gate["threshold"] < 1
    assert (tmp_path / "both" / "panels" / "synthetic_night_night2day_gated.png").exists()


@pytest.mark.slow
def test_gate_is_fitted_on_translator_images_and_keeps_day_images_raw(tmp_path, smoke_overrides):
    cfg = compose_cfg(smoke_overrides + ["strategy=night2day_inference"])
    catalog = instantiate(cfg.data.catalog)
    job = Job(cfg=cfg, run_dir=tmp_path, cache=stage_cache(cfg.paths.cache_dir),
              tracker=CSVTracker(save_dir=tmp_path), catalog=catalog)
    gate = get_gate(job)
    # Exactly the translator's unlabelled day and night images, as the segmenter sees them.
    lumas = {}
    for name, s in (("day", catalog.translate_day), ("night", catalog.translate_night)):
        ds = SegmentationDataset(s, build_transform(cfg.data.resize))
        # Workers hand out uint8 images; the model (and the gate) see them as float in [0, 1].
        lumas[name] = [float(mean_luma(ds[i]["image"][None].float() / 255)[0])
                       for i in range(len(ds))]
    assert (gate.threshold, gate.fit_day_acc, gate.fit_night_acc) == pytest.approx(
        fit_threshold(lumas["day"], lumas["night"]))
    assert gate.fit_images == len(catalog.translate_day) + len(catalog.translate_night)

    # A day-only test set through the gate is scored exactly as without translation.
    translator, _ = get_translator(job)
    segmenter = get_segmenter(job)
    day_sets = catalog.val
    raw = evaluate(job, segmenter, day_sets)
    gated = evaluate(job, segmenter, day_sets, translator=translator, gate=gate)
    (name,) = (s.name for s in day_sets)
    assert gated.gate[name]["translated"] == 0 and gated.gate[name]["domain"] == "day"
    assert gated.condition == "night2day_gated" and raw.condition == "raw"
    assert {k: gated.rows[0][k] for k in ("miou", "pixel_acc", "per_class_iou")} == \
        {k: raw.rows[0][k] for k in ("miou", "pixel_acc", "per_class_iou")}


def test_under_ddp_only_rank_zero_decodes_and_fits_the_gate(tmp_path, monkeypatch):
    """Another rank's build does nothing (no image decoded, nothing written) and the gate it returns
    is the one rank zero published (a stand-in for the cache's publish and barrier)."""
    import json
    from types import SimpleNamespace

    from nightseg.training import stages

    published = BrightnessGate(0.3, 0.9, 0.8, 16)
    (tmp_path / "gate.json").write_text(json.dumps(published.to_dict()))
    built = []

    def obtain(kind, spec, artefact, build):
        build(SimpleNamespace(), tmp_path / "tmp.json")
        built.append((tmp_path / "tmp.json").exists())
        return tmp_path / "gate.json", "trained"

    def no_decoding(*args, **kwargs):
        raise AssertionError("a rank other than zero decoded images for the gate")

    monkeypatch.setattr(stages.distributed, "is_rank_zero", lambda: False)
    monkeypatch.setattr(stages, "SegmentationDataset", no_decoding)
    monkeypatch.setattr(stages, "gate_spec", lambda job: {})
    # Obtaining the prepared sets is a collective every rank joins; its own tests are elsewhere.
    monkeypatch.setattr(stages, "prepare_sets", lambda job, sets, **kw: list(sets))
    cfg = compose_cfg(["experiment=smoke", "logger=csv", f"paths.cache_dir={tmp_path}/c"])
    catalog = SimpleNamespace(translate_day=None, translate_night=None)
    job = Job(cfg=cfg, run_dir=tmp_path, tracker=None, catalog=catalog,
              cache=SimpleNamespace(obtain=obtain))
    assert get_gate(job).to_dict() == published.to_dict() and built == [False]
