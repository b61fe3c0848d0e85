"""The fast part of the fault-injection matrix (the whole matrix: python -m nightseg.faults):
checksums recorded at publication and checked at reuse, temporaries of killed builds removed, a
full disk or an unwritable directory as one line naming the path, the runner's own helpers."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from nightseg.core.cli import storage_error
from nightseg.core.errors import DataError
from nightseg.infra import cache as cache_module
from nightseg.infra.cache import CHECKSUMS, StageCache


def _weights(stage, out: Path) -> None:
    out.write_bytes(b"weights" * 100)


def _images(stage, out: Path) -> None:
    (out / "images").mkdir(parents=True)
    for k in range(3):
        (out / "images" / f"{k:06d}.png").write_bytes(bytes([k]) * 50)
    (out / "manifest.json").write_text(json.dumps([{"index": k} for k in range(3)]))


@pytest.fixture(autouse=True)
def _fresh_hash_memo(monkeypatch):
    """Each test is "a new process" for the once-per-process hash check."""
    monkeypatch.setattr(cache_module, "_HASHED", set())


def test_checksums_are_recorded_before_the_artefact_appears(tmp_path):
    seen = []

    def build(stage, out):
        _images(stage, out)
        seen.append((stage.dir / CHECKSUMS).exists())

    path, _ = StageCache(tmp_path).obtain("night_images", {"x": 1}, "images", build)
    record = json.loads((path.parent / CHECKSUMS).read_text())
    assert seen == [False]
    assert set(record["files"]) == {"images/images/000000.png", "images/images/000001.png",
                                    "images/images/000002.png", "images/manifest.json", "spec.json"}
    assert record["files"]["images/images/000001.png"]["size"] == 50


CORRUPTIONS = {
    "truncated": lambda d: os.truncate(d / "model.ckpt", 10),
    "zeroed": lambda d: (d / "model.ckpt").write_bytes(bytes(700)),  # same size: only the hash tells
    "spec edited": lambda d: (d / "spec.json").write_text((d / "spec.json").read_text().replace("1", "2")),
    "checksums unreadable": lambda d: (d / CHECKSUMS).write_text("{"),
}


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_a_corrupt_artefact_is_named_moved_aside_and_rebuilt(tmp_path, caplog, how):
    cache = StageCache(tmp_path)
    path, _ = cache.obtain("segmenter", {"x": 1}, "model.ckpt", _weights)
    CORRUPTIONS[how](path.parent)
    builds = []
    with caplog.at_level(logging.WARNING, logger="nightseg.infra.cache"):
        path2, status = cache.obtain("segmenter", {"x": 1}, "model.ckpt",
                                     lambda stage, out: builds.append(1) or _weights(stage, out))
    assert status == "trained" and builds == [1] and path2 == path
    assert path.read_bytes() == b"weights" * 100
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path.parent) in warnings[0]
    assert (path.parent.with_name(path.parent.name + ".corrupt-0") / "model.ckpt").exists()
    # and the rebuilt stage is whole: reused without another build
    assert cache.obtain("segmenter", {"x": 1}, "model.ckpt", lambda s, o: builds.append(2))[1] == "cached"


@pytest.mark.parametrize("how", ["deleted", "added", "manifest edited"])
def test_a_generated_set_with_a_file_deleted_added_or_edited_is_rebuilt(tmp_path, caplog, how):
    cache = StageCache(tmp_path)
    path, _ = cache.obtain("night_images", {"x": 1}, "images", _images)
    target = {"deleted": path / "images" / "000001.png", "added": path / "images" / "000009.png",
              "manifest edited": path / "manifest.json"}[how]
    if how == "deleted":
        target.unlink()
    elif how == "added":
        target.write_bytes(b"x")
    else:
        target.write_text(target.read_text().replace('"index": 1', '"index": 2'))
    with caplog.at_level(logging.WARNING, logger="nightseg.infra.cache"):
        _, status = cache.obtain("night_images", {"x": 1}, "images", _images)
    assert status == "trained"
    assert str(target) in caplog.text  # the file is named


def test_hashes_are_checked_once_per_process_and_sizes_every_time(tmp_path):
    cache = StageCache(tmp_path)
    path, _ = cache.obtain("segmenter", {"x": 1}, "model.ckpt", _weights)
    assert cache.obtain("segmenter", {"x": 1}, "model.ckpt", _weights)[1] == "cached"  # hashed now
    path.write_bytes(bytes(700))  # same size: not hashed again in this process
    assert cache.obtain("segmenter", {"x": 1}, "model.ckpt", _weights)[1] == "cached"
    os.truncate(path, 5)  # a size change is seen at once
    assert cache.obtain("segmenter", {"x": 1}, "model.ckpt", _weights)[1] == "trained"


def test_a_stage_published_before_checksums_is_trusted_once_and_gets_them(tmp_path):
    cache = StageCache(tmp_path)
    stage = cache.stage("translator", {"x": 1}, "model.ckpt")
    stage.dir.mkdir(parents=True)
    stage.path.write_bytes(b"old weights")
    path, status = cache.obtain("translator", {"x": 1}, "model.ckpt", _weights)
    assert status == "cached" and path.read_bytes() == b"old weights"
    assert "model.ckpt" in json.loads((stage.dir / CHECKSUMS).read_text())["files"]


def test_temporaries_of_a_killed_build_are_removed_by_the_next_build(tmp_path):
    """kill -9 leaves atomic_path's temporary (no finally runs); the next build, holding the
    lock, removes it."""
    cache = StageCache(tmp_path)
    stage = cache.stage("segmenter", {"x": 1}, "model.ckpt")
    stale = stage.dir / ".model.ckpt.abc123.tmp"
    (stale / "item").mkdir(parents=True)
    (stage.dir / ".spec.json.def456.tmp").write_text("{")
    cache.obtain("segmenter", {"x": 1}, "model.ckpt", _weights)
    assert not list(stage.dir.glob(".*.tmp"))


def test_a_full_disk_during_a_build_publishes_nothing_and_the_rerun_builds(tmp_path):
    cache = StageCache(tmp_path)

    def full(stage, out):
        out.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    with pytest.raises(OSError):
        cache.obtain("segmenter", {"x": 1}, "model.ckpt", full)
    stage = cache.stage("segmenter", {"x": 1}, "model.ckpt")
    assert not stage.path.exists() and not list(stage.dir.glob(".*.tmp"))
    assert cache.obtain("segmenter", {"x": 1}, "model.ckpt", _weights)[1] == "trained"


def test_storage_errors_become_one_line_naming_the_path(tmp_path, monkeypatch):
    cache, run = tmp_path / "cache", tmp_path / "run"
    inside = cache / "stages" / "x" / "model.ckpt"
    e = storage_error(OSError(errno.ENOSPC, "No space left on device", str(inside)), [cache, run])
    assert isinstance(e, DataError) and f"no space left on the device writing {inside}" in str(e)
    assert "\n" not in str(e) and "run the same command again" in str(e)
    # a writer that staged its file elsewhere (fsspec: /tmp) is placed by the fullest directory
    free = {str(cache): 4096, str(run): 10**12}
    monkeypatch.setattr("nightseg.core.cli._free_bytes", lambda d: free[str(d)])
    e = storage_error(OSError(errno.ENOSPC, "No space left on device", "/tmp/tmpabc"), [cache, run])
    assert f"writing {cache}, 4 KiB free under {cache}" in str(e)
    # torch's checkpoint writer says neither errno nor file
    e = storage_error(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0 "
                                   "file write failed"), [cache, run])
    assert e is not None and f"writing {cache}" in str(e)
    # wrapped in another exception (a loader, Lightning)
    try:
        try:
            raise PermissionError(errno.EACCES, "Permission denied", str(cache / "stages"))
        except PermissionError as inner:
            raise RuntimeError("stage failed") from inner
    except RuntimeError as outer:
        e = storage_error(outer, [cache, run])
    assert str(e).startswith(f"cannot write {cache / 'stages'} (Permission denied): make it writable")
    assert storage_error(OSError(errno.EROFS, "Read-only file system", str(cache)), [cache]) is not None
    assert storage_error(ValueError("a bug"), [cache, run]) is None
    assert storage_error(OSError(errno.ENOENT, "No such file", "x"), [cache, run]) is None
    free[str(cache)] = 10**12  # a torch write failure on a disk with room: not ours to explain
    assert storage_error(RuntimeError("file write failed"), [cache, run]) is None


def test_run_main_prints_one_line_for_a_full_disk(tmp_path, monkeypatch):
    """What `python -m nightseg.run` prints when the disk fills (the writer simulated: no mount)."""
    import runpy

    import nightseg.training.config

    cache = tmp_path / "cache"

    def full(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(cache / "stages" / "model.ckpt"))

    monkeypatch.setattr(nightseg.training.config, "validate", full)  # the first thing run() calls
    monkeypatch.setattr(sys, "argv", ["nightseg.run", "experiment=smoke", "logger=csv",
                                      f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("nightseg.run", run_name="__main__", alter_sys=True)
    message = str(exit_info.value.code)
    assert message.startswith(f"error: no space left on the device writing {cache / 'stages' / 'model.ckpt'}")
    assert "\n" not in message


def test_the_runner_compares_metrics_without_timings_and_relative_checkpoints(tmp_path):
    from nightseg.tools.faults.runs import comparable, damage, markdown

    m = {"results": [1], "timings_s": {"segmenter": 1.0}, "stages": {"segmenter": "trained"},
         "checkpoints": {"segmenter": str(tmp_path / "a" / "stages" / "segmenter" / "k" / "model.ckpt")}}
    other = dict(m, timings_s={"segmenter": 2.0}, stages={"segmenter": "cached"},
                 checkpoints={"segmenter": str(tmp_path / "b" / "stages" / "segmenter" / "k" / "model.ckpt")})
    assert comparable(m, tmp_path / "a") == comparable(other, tmp_path / "b")
    assert comparable(dict(m, results=[2]), tmp_path / "a") != comparable(m, tmp_path / "a")
    stage = tmp_path / "c" / "stages" / "segmenter" / "k"
    stage.mkdir(parents=True)
    (stage / "model.ckpt").write_bytes(b"torn")
    (stage / ".model.ckpt.x.tmp").mkdir()
    torn, temps = damage(tmp_path / "c")
    assert len(torn) == 1 and len(temps) == 1
    row = {"case": "c", "trials": 1, "finished": 1, "metrics_equal": 0, "rebuilt_complete": 0, "torn": 0,
           "temps_left": 0, "criterion": "", "criterion_met": None, "wall_s": 1.0, "skipped": "",
           "notes": ["why"], "survived": False}
    assert "**FAILS** c" in markdown([row])


class _Killed(RuntimeError):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["translator", "segmenter"])
def test_a_stage_resumed_from_its_epoch_checkpoint_trains_as_the_uninterrupted_one(tmp_path, smoke_overrides,
                                                                                 monkeypatch, stage):
    """Killed in its second epoch and resumed from the first epoch's checkpoint, a stage ends with
    the weights (and the job with the metrics) of the run that was never interrupted: the random
    states, the training order and the GAN history pools come back with the checkpoint."""
    import torch

    from nightseg.models.cyclegan import CycleGANModule
    from nightseg.models.segmentation import SegmentationModule
    from nightseg.run import run
    from tests.conftest import compose_cfg

    module = CycleGANModule if stage == "translator" else SegmentationModule
    overrides = smoke_overrides + ["strategy=augment", "night_count=8", "trainer.deterministic=true",
                                   "model.segmenter.max_epochs=2"]
    whole = run(compose_cfg(overrides + [f"paths.cache_dir={tmp_path}/a"]), tmp_path / "ra")

    real_step = module.training_step

    def dies_in_second_epoch(self, *a):
        if self.current_epoch == 1 and not self.trainer.sanity_checking:
            raise _Killed
        return real_step(self, *a)

    monkeypatch.setattr(module, "training_step", dies_in_second_epoch)
    with pytest.raises(_Killed):
        run(compose_cfg(overrides + [f"paths.cache_dir={tmp_path}/b"]), tmp_path / "rb")
    assert list((tmp_path / "b" / "stages" / stage).glob("*/work/last.ckpt"))
    monkeypatch.setattr(module, "training_step", real_step)
    resumed = run(compose_cfg(overrides + [f"paths.cache_dir={tmp_path}/b"]), tmp_path / "rc")
    weights = [torch.load(m["checkpoints"][stage], map_location="cpu", weights_only=False)["state_dict"]
               for m in (whole, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert resumed["results"] == whole["results"]


def test_a_torn_resume_checkpoint_is_set_aside_and_the_stage_starts_over(tmp_path, caplog):
    """A full disk (or a kill) while Lightning wrote last.ckpt left it torn: every rerun failed
    loading it. Now it is named, moved aside, and the stage trains from its start."""
    import torch

    from nightseg.infra.cache import resume_checkpoint

    good, torn = tmp_path / "good" / "last.ckpt", tmp_path / "torn" / "last.ckpt"
    for p in (good, torn):
        p.parent.mkdir()
    torch.save({"epoch": 1}, good)
    torn.write_bytes(good.read_bytes()[:40])
    assert resume_checkpoint(good) == good and resume_checkpoint(tmp_path / "none.ckpt") is None
    with caplog.at_level(logging.WARNING, logger="nightseg.infra.cache"):
        assert resume_checkpoint(torn) is None
    assert not torn.exists() and torn.with_name("last.ckpt.torn").exists()
    assert str(torn) in caplog.text


def test_run_main_names_a_read_only_cache_also_behind_hydras_instantiation_error(tmp_path, monkeypatch):
    """A read-only empty cache fails first where the synthetic dataset is rendered, inside
    hydra.utils.instantiate, which wraps the OSError in its own exception (found by the matrix)."""
    import runpy

    from hydra.errors import InstantiationException

    import nightseg.training.config

    cache = tmp_path / "cache"

    def read_only(cfg):
        try:
            raise OSError(errno.EROFS, "Read-only file system", str(cache / "synthetic"))
        except OSError as e:
            raise InstantiationException("Error in call to target 'build_catalog'") from e

    monkeypatch.setattr(nightseg.training.config, "validate", read_only)
    monkeypatch.setattr(sys, "argv", ["nightseg.run", "experiment=smoke", "logger=csv",
                                      f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("nightseg.run", run_name="__main__", alter_sys=True)
    assert str(exit_info.value.code).startswith(f"error: cannot write {cache / 'synthetic'} (Read-only file "
                                                "system): make it writable")


def test_every_entry_point_reports_storage_errors_and_bad_input_in_one_line(tmp_path):
    """run, evaluate and predict share errors_as_one_line: a full disk (also wrapped) and bad input
    become one line; anything else keeps its traceback."""
    from nightseg.core.cli import errors_as_one_line
    from nightseg.core.errors import ConfigError

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit, match=rf"^error: no space left on the device writing {out / 'x.png'}"):
        with errors_as_one_line([None, out]):
            try:
                raise OSError(errno.ENOSPC, "No space left on device", str(out / "x.png"))
            except OSError as inner:
                raise RuntimeError("writer failed") from inner
    with pytest.raises(SystemExit, match=r"^error: models.segmenter=x: missing$"):
        with errors_as_one_line([out]):
            raise ConfigError("models.segmenter=x: missing")
    with pytest.raises(ValueError, match="a bug"):
        with errors_as_one_line([out]):
            raise ValueError("a bug")
    for module in ("run", "evaluate", "predict"):  # each entry point goes through it
        source = (Path(__file__).parents[1] / "nightseg" / f"{module}.py").read_text()
        assert "with errors_as_one_line(" in source, module
