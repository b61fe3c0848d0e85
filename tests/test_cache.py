"""The stage cache: stable keys, atomic publication, one build under concurrent jobs, resume."""

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from nightseg.cache import StageCache, stage_key


def test_key_is_stable_and_order_independent():
    assert stage_key({"a": 1, "b": [1, 2]}) == stage_key({"b": [1, 2], "a": 1})
    assert stage_key({"a": 1}) != stage_key({"a": 2})


def test_obtain_builds_once_then_reuses(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def build(stage, out: Path):
        calls.append(stage.key)
        out.write_text("weights")

    p1, s1 = cache.obtain("translator", {"x": 1}, "model.ckpt", build)
    p2, s2 = cache.obtain("translator", {"x": 1}, "model.ckpt", build)
    assert (s1, s2) == ("trained", "cached") and p1 == p2 and len(calls) == 1
    assert p1.read_text() == "weights"
    assert (p1.parent / "spec.json").exists()


def test_failed_build_leaves_nothing_and_keeps_resume_state(tmp_path):
    cache = StageCache(tmp_path)

    def failing(stage, out: Path):
        stage.work_dir.mkdir(parents=True)
        (stage.work_dir / "last.ckpt").write_text("epoch 3")
        out.mkdir()
        (out / "half.png").write_text("x")
        raise KeyboardInterrupt  # a killed run

    with pytest.raises(KeyboardInterrupt):
        cache.obtain("night_images", {"x": 1}, "images", failing)
    stage = cache.stage("night_images", {"x": 1}, "images")
    assert not stage.path.exists()
    assert not [p for p in stage.dir.iterdir() if p.name.endswith(".tmp")]
    assert (stage.work_dir / "last.ckpt").exists()  # the rerun resumes from here

    def resume(stage, out: Path):
        assert (stage.work_dir / "last.ckpt").read_text() == "epoch 3"
        out.mkdir()

    path, status = cache.obtain("night_images", {"x": 1}, "images", resume)
    assert status == "trained" and path.is_dir()
    assert not stage.work_dir.exists()  # published: resume state removed


def _job(root: str, log: str) -> None:
    def build(stage, out: Path):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        out.write_text("ok")

    StageCache(root).obtain("translator", {"same": True}, "model.ckpt", build)


def test_parallel_jobs_build_the_same_artefact_once(tmp_path):
    log = tmp_path / "builds.log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_job, args=(str(tmp_path / "c"), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert log.read_text().count("built") == 1
