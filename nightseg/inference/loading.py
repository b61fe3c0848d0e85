"""Trained models outside a run: name them, check them, load them into one SegmentationPipeline.

``python -m nightseg.evaluate`` and ``python -m nightseg.predict`` both take the ``models`` block
of conf/shared/models.yaml: a run directory (its metrics.json lists the checkpoints it was scored
with), stage-cache keys, or checkpoint paths. :func:`resolve` turns that into file paths,
:func:`load_pipeline` into the module that runs them, so both commands run exactly what a run's
evaluation ran (nightseg.inference.pipeline). Every mistake a user can make here (a missing file, a
translator checkpoint given as the segmenter, weights that do not fit their hyperparameters, a
segmenter for other classes than the data's) stops with one line naming the key, the path and the
fix (ConfigError), before any image is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from nightseg.core.errors import ConfigError
from nightseg.inference.gate import BrightnessGate
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.models.cyclegan import CycleGANModule
from nightseg.models.distill import DistillationModule
from nightseg.models.segmentation import SegmentationModule

RUNTIMES = ("torch", "onnxruntime")
# A stage-cache key (nightseg.infra.cache.stage_key): 16 hex digits.
_KEY = re.compile(r"^[0-9a-f]{16}$")
# What each stage publishes under <cache>/stages/<kind>/<key>/.
_ARTEFACTS = {"segmenter": ("segmenter", "model.ckpt"), "translator": ("translator", "model.ckpt"),
              "gate": ("gate", "gate.json")}
# Conditions of a run's result rows that put its translator (and gate) in front of the segmenter.
_TRANSLATED = ("night2day", "night2day_gated")
# An explicit "no translator / no gate", where null means "the run's, if any".
NONE = "none"


@dataclass
class Models:
    """The files to load: ``segmenter``, ``translator`` and ``gate`` (gate.json) paths, and the
    run they come from (its metrics.json, for the seeds and night_count it was trained with)."""

    segmenter: Path
    translator: Path | None = None
    gate: Path | None = None
    run: dict = field(default_factory=dict)

    def checkpoints(self) -> dict[str, str]:
        """metrics.json's ``checkpoints``: what was evaluated."""
        out = {"segmenter": str(self.segmenter)}
        if self.translator is not None:
            out["translator"] = str(self.translator)
        if self.gate is not None:
            out["gate"] = str(self.gate)
        return out


def resolve(models: DictConfig, cache_dir: str | Path) -> Models:
    """The paths named by ``models`` (run, segmenter, translator, gate). An explicit path or key
    wins over the run's; ``translator=none`` / ``gate=none`` drop the run's. A run's translator
    (and gate) is taken when its result rows were translated (night2day, night2day_gated), so
    evaluating a run reproduces its rows."""
    run: dict = {}
    from_run: dict[str, str] = {}
    if models.get("run") is not None:
        run_dir = Path(str(models.run))
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():
            raise ConfigError(f"models.run={run_dir}: no metrics.json there; give the directory of a "
                              "finished run (outputs/<date>/<time>, or a sweep job's directory)")
        run = json.loads(metrics_file.read_text())
        from_run = {k: v for k, v in run.get("checkpoints", {}).items() if k in _ARTEFACTS}
        conditions = {r["condition"] for r in run.get("results", [])}
        if not conditions & set(_TRANSLATED):
            from_run.pop("translator", None)  # trained for augment's images, not used at test time
        if "night2day_gated" not in conditions:
            from_run.pop("gate", None)
    paths: dict[str, Path | None] = {}
    for kind in _ARTEFACTS:
        value = models.get(kind)
        if value is not None and str(value) == NONE:
            paths[kind] = None
        elif value is not None:
            paths[kind] = _path(kind, str(value), Path(cache_dir))
        elif kind in from_run:
            paths[kind] = _exists(kind, Path(from_run[kind]), f"models.run={models.run}")
        else:
            paths[kind] = None
    if paths["segmenter"] is None:
        raise ConfigError("no segmenter named: give models.run=<run directory>, or "
                          "models.segmenter=<model.ckpt or its stage-cache key>")
    if paths["gate"] is not None and paths["translator"] is None:
        raise ConfigError(f"models.gate={paths['gate']} decides which images to translate, but no "
                          "translator is named: give models.translator=<model.ckpt or key>, or "
                          "models.gate=none")
    return Models(paths["segmenter"], paths["translator"], paths["gate"], run)


def _path(kind: str, value: str, cache_dir: Path) -> Path:
    """A checkpoint path, a stage directory holding it, or a stage-cache key."""
    stage_kind, artefact = _ARTEFACTS[kind]
    path = Path(value)
    if not path.exists() and _KEY.match(value):
        path = cache_dir / "stages" / stage_kind / value / artefact
        if not path.exists():
            for other, (other_kind, other_artefact) in _ARTEFACTS.items():
                if (cache_dir / "stages" / other_kind / value / other_artefact).exists():
                    raise ConfigError(f"models.{kind}={value} is the key of a {other_kind}, not of a "
                                      f"{stage_kind}; it belongs in models.{other}")
            raise ConfigError(f"models.{kind}={value}: no {stage_kind} with that key in the stage "
                              f"cache ({path} is missing); check paths.cache_dir (now {cache_dir}) "
                              "or give the checkpoint's path")
        return path
    if path.is_dir() and (path / artefact).exists():
        path = path / artefact
    return _exists(kind, path, f"models.{kind}={value}")


def _exists(kind: str, path: Path, given: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{given}: the {kind} file {path} does not exist; give an existing "
                          f"{_ARTEFACTS[kind][1]} (a run's metrics.json lists them under "
                          "checkpoints; a cleared stage cache is rebuilt by rerunning the run)")
    return path


# ---- loading -----------------------------------------------------------------------------------
def _read_checkpoint(path: Path, key: str) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise ConfigError(f"{key}={path}: cannot read it as a checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); give a model.ckpt written "
                          "by nightseg") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ConfigError(f"{key}={path}: not a nightseg (Lightning) checkpoint: it has no "
                          "state_dict and hyper_parameters; give a model.ckpt from the stage cache")
    return ckpt


def _kind(state_dict: dict) -> str:
    """What a checkpoint holds, from its weights' names."""
    if any(k.startswith("net.") for k in state_dict):
        return "segmenter"
    if any(k.startswith("night2day.") for k in state_dict):
        return "translator"
    return "unknown"


def _wrong_kind(key: str, path: Path, found: str, wanted: str) -> ConfigError:
    hint = {"segmenter": "stages/segmenter/<key>/model.ckpt",
            "translator": "stages/translator/<key>/model.ckpt"}[wanted]
    other = f"; it belongs in models.{found}" if found in ("segmenter", "translator") else ""
    return ConfigError(f"{key}={path} is a {found} checkpoint, not a {wanted}{other}; give the "
                       f"{wanted}'s model.ckpt ({hint}, or models.run=<run directory>)")


def _build(cls, ckpt: dict, key: str, path: Path):
    try:
        module = cls(**ckpt["hyper_parameters"])
        module.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:300]
        raise ConfigError(f"{key}={path}: its weights do not fit the {cls.__name__} its "
                          f"hyperparameters describe ({detail}); the file was edited or is not "
                          "nightseg's: give the model.ckpt the stage cache published") from None
    return module.eval()


def load_segmenter(path: Path, key: str = "models.segmenter") -> SegmentationModule:
    ckpt = _read_checkpoint(path, key)
    found = _kind(ckpt["state_dict"])
    if found != "segmenter":
        raise _wrong_kind(key, path, found, "segmenter")
    return _build(SegmentationModule, ckpt, key, path)


def load_translator(path: Path, key: str = "models.translator"):
    """A CycleGANModule, or a DistillationModule (a light student: no critics)."""
    ckpt = _read_checkpoint(path, key)
    found = _kind(ckpt["state_dict"])
    if found != "translator":
        raise _wrong_kind(key, path, found, "translator")
    cls = CycleGANModule if any(k.startswith("disc_day.") for k in ckpt["state_dict"]) \
        else DistillationModule
    return _build(cls, ckpt, key, path)


def load_gate(path: Path, key: str = "models.gate") -> BrightnessGate:
    try:
        return BrightnessGate.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{key}={path}: not a gate.json written by nightseg ({type(e).__name__}: "
                          f"{e}); give stages/gate/<key>/gate.json or models.gate=none") from None


@dataclass
class Classes:
    """What the segmenter predicts: class ids 0..num_classes-1 named ``names``."""

    names: list[str]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.names)


@dataclass
class Loaded:
    """A ready pipeline and what its segmenter predicts."""

    pipeline: SegmentationPipeline
    classes: Classes


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime={runtime}: use {' or '.join(RUNTIMES)}")


def load_pipeline(models: Models, runtime: str = "torch",
                  cache_dir: str | Path = ".cache/nightseg") -> Loaded:
    """The one place a pipeline is made from trained models, for evaluate and predict alike.

    ``runtime=torch`` runs the checkpoints' own modules (on the device and precision the caller
    chooses). ``runtime=onnxruntime`` runs the same checkpoints exported to ONNX (segmenter and
    night->day generator, exported and parity-checked once per checkpoint into ``cache_dir``'s
    stage cache by nightseg.export) in onnxruntime, fp32, in the places of the torch modules:
    everything downstream only calls ``segmenter(images)`` and
    ``translator.translate(images, "night2day")``, the gate included.
    """
    check_runtime(runtime)
    segmenter = load_segmenter(models.segmenter)
    translator = load_translator(models.translator) if models.translator is not None else None
    gate = load_gate(models.gate) if models.gate is not None else None
    hp = segmenter.hparams
    classes = Classes(list(hp.class_names), int(hp.ignore_index))
    if runtime == "onnxruntime":
        from nightseg.export import OnnxPipeline, OnnxTranslator, runtime_graphs

        graphs = runtime_graphs(models.segmenter, segmenter, models.translator, translator, cache_dir)
        segmenter = OnnxPipeline(graphs["segmenter"])
        if translator is not None:
            translator = OnnxTranslator(graphs["night2day"], "night2day")
    return Loaded(SegmentationPipeline(segmenter, translator, gate).eval(), classes)
