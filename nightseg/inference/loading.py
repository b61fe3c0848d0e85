"""Trained models outside a run: name them, check them, load them into one SegmentationPipeline.

``python -m nightseg.evaluate`` and ``python -m nightseg.predict`` both take the ``models`` block
of conf/shared/models.yaml: a run directory (its metrics.json lists the checkpoints it was scored
with), stage-cache keys, or checkpoint paths. :func:`resolve` turns that into file paths,
:func:`load_models` into the module that runs them, so both commands run exactly what a run's
evaluation ran (nightseg.inference.pipeline); the export and the bench load checkpoints here
too. Every mistake a user can make here (a missing file, a translator checkpoint given as the
segmenter, weights that do not fit their hyperparameters, a segmenter for other classes than the
data's) stops with one line naming the key, the path and the fix (ConfigError), before any image
is read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig

from nightseg.core.errors import ConfigError
from nightseg.inference.gate import BrightnessGate
from nightseg.inference.pipeline import SegmentationPipeline
from nightseg.infra.cache import ARTEFACTS, is_stage_key, stage_cache
from nightseg.models.cyclegan import CycleGANModule
from nightseg.models.distill import DistillationModule
from nightseg.models.segmentation import SegmentationModule

# The models a user names, as stage kinds of the cache (nightseg.infra.cache owns the layout).
_KINDS = ("segmenter", "translator", "gate")
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
        from_run = {k: v for k, v in run_checkpoints(run_dir, run).items() if k in _KINDS}
        conditions = {r["condition"] for r in run.get("results", [])}
        if not conditions & set(_TRANSLATED):
            from_run.pop("translator", None)  # trained for augment's images, not used at test time
        if "night2day_gated" not in conditions:
            from_run.pop("gate", None)
    paths: dict[str, Path | None] = {}
    for kind in _KINDS:
        value = models.get(kind)
        if value is not None and str(value) == NONE:
            paths[kind] = None
        elif value is not None:
            paths[kind] = _path(kind, str(value), Path(cache_dir))
        elif kind in from_run:
            paths[kind] = _exists(kind, from_run[kind], f"models.run={models.run}")
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


def run_checkpoints(run_dir: Path, metrics: dict | None = None) -> dict[str, Path]:
    """The checkpoints a run's metrics.json lists, by stage. Relative paths there are relative to
    the directory the run was started from (its hydra.runtime.cwd), else to the current one."""
    if metrics is None:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    bases = [*_run_cwd(Path(run_dir)), Path.cwd()]
    found = {}
    for kind, value in metrics.get("checkpoints", {}).items():
        p = Path(value)
        found[kind] = p if p.is_absolute() else next((b / p for b in bases if (b / p).exists()), p)
    return found


def _run_cwd(run_dir: Path) -> list[Path]:
    hydra = run_dir / ".hydra" / "hydra.yaml"
    if hydra.is_file():
        from omegaconf import OmegaConf

        cwd = OmegaConf.load(hydra).hydra.runtime.get("cwd")
        if cwd:
            return [Path(cwd)]
    return []


def checkpoints_from_options(run_dir: str | os.PathLike | None = None, segmenter: str | None = None,
                             translator: str | None = None, cache_dir: str | os.PathLike | None = None
                             ) -> dict[str, Path]:
    """``{"segmenter": path, "translator": path}`` (either may be missing) from a run directory
    (its metrics.json's "checkpoints"), stage-cache keys or checkpoint paths;
    ``segmenter``/``translator`` override the run's: the options ``--run``, ``--segmenter``,
    ``--translator`` and ``--cache-dir`` of python -m nightseg.export and python -m nightseg.bench
    (a run's checkpoints relative to the directory it was started from, as :func:`resolve`).
    """
    found: dict[str, Path] = {}
    if run_dir is not None:
        run_dir = Path(run_dir)
        if not (run_dir / "metrics.json").is_file():
            raise ConfigError(f"--run {run_dir}: no metrics.json there; name a finished run's "
                              "directory, or give --segmenter/--translator checkpoints or cache keys")
        listed = run_checkpoints(run_dir)
        found.update({k: listed[k] for k in ("segmenter", "translator") if k in listed})
    cache_dir = Path(cache_dir or os.environ.get("NIGHTSEG_CACHE_DIR", ".cache/nightseg"))
    for kind, name in (("segmenter", segmenter), ("translator", translator)):
        if name is None:
            continue
        p = Path(name)
        key = is_stage_key(name) and not p.exists()
        found[kind] = stage_cache(cache_dir).published(kind, name) if key else p
    for kind, p in found.items():
        if not p.is_file():
            raise ConfigError(f"{p}: the {kind} checkpoint does not exist; check --{kind} (a "
                              f"checkpoint path or a cache key under --cache-dir {cache_dir}) "
                              "or --run")
    if not found:
        raise ConfigError("nothing to export: give --run RUN_DIR, or --segmenter and/or --translator")
    return found


def _path(kind: str, value: str, cache_dir: Path) -> Path:
    """A checkpoint path, a stage directory holding it, or a stage-cache key."""
    artefact = ARTEFACTS[kind]
    path = Path(value)
    if not path.exists() and is_stage_key(value):
        cache = stage_cache(cache_dir)
        path = cache.published(kind, value)
        if not path.exists():
            for other in _KINDS:
                if cache.published(other, value).exists():
                    raise ConfigError(f"models.{kind}={value} is the key of a {other}, not of a "
                                      f"{kind}; it belongs in models.{other}")
            raise ConfigError(f"models.{kind}={value}: no {kind} with that key in the stage "
                              f"cache ({path} is missing); check paths.cache_dir (now {cache_dir}) "
                              "or give the checkpoint's path")
        return path
    if path.is_dir() and (path / artefact).exists():
        path = path / artefact
    return _exists(kind, path, f"models.{kind}={value}")


def _exists(kind: str, path: Path, given: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{given}: the {kind} file {path} does not exist; give an existing "
                          f"{ARTEFACTS[kind]} (a run's metrics.json lists them under "
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


def load_models(models: Models) -> Loaded:
    """The one place trained models are loaded, for evaluate, predict, export and bench alike: the
    checkpoints' own modules (checked, in eval mode, on the CPU) in one SegmentationPipeline. The
    runtime they run in is the caller's choice (nightseg.deploy.pipelines.load_pipeline)."""
    segmenter = load_segmenter(models.segmenter)
    translator = load_translator(models.translator) if models.translator is not None else None
    gate = load_gate(models.gate) if models.gate is not None else None
    hp = segmenter.hparams
    classes = Classes(list(hp.class_names), int(hp.ignore_index))
    return Loaded(SegmentationPipeline(segmenter, translator, gate).eval(), classes)
