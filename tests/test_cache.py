"""The stage cache: stable keys, atomic publication, one build under concurrent jobs, resume."""

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from nightseg.infra.cache import ARTEFACTS, StageCache, is_stage_key, stage_cache, stage_key


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


def test_the_layout_is_said_once(tmp_path):
    """Where a stage is published is what stage_cache(...).published names: the loaders of
    evaluate, predict and export find a key's artefact there."""
    cache = stage_cache(tmp_path)
    for kind, artefact in ARTEFACTS.items():
        path, _ = cache.obtain(kind, {"kind": kind}, artefact, lambda stage, out: out.write_text("x"))
        key = path.parent.name
        assert is_stage_key(key) and cache.published(kind, key) == path
        assert path == tmp_path / "stages" / kind / key / artefact
    assert not is_stage_key("0123456789ABCDEF") and not is_stage_key("0123")


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


@pytest.mark.slow
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


def _hold_lock_then_publish(root: str, ready: str) -> None:
    cache = StageCache(root)
    stage = cache.stage("translator", {"same": True}, "model.ckpt")
    stage.dir.mkdir(parents=True)
    from filelock import FileLock

    with FileLock(str(stage.dir) + ".lock"):
        Path(ready).touch()
        time.sleep(5)
        stage.path.write_text("theirs")


@pytest.mark.slow
def test_rank_zero_waits_for_another_job_in_short_meetings(tmp_path, monkeypatch):
    """While another job holds the lock, rank zero tells the other ranks "wait" every few seconds
    (a collective each time) instead of keeping them in one collective for the whole build,
    which would hit the process group's timeout; then every rank gets its "cached"."""
    from nightseg.infra import cache as cache_module

    decisions = []
    monkeypatch.setattr(cache_module.distributed, "broadcast",
                        lambda obj: decisions.append(obj) or obj)
    monkeypatch.setattr(cache_module, "LOCK_POLL_S", 0.5)
    ready = tmp_path / "ready"
    holder = mp.get_context("spawn").Process(target=_hold_lock_then_publish,
                                              args=(str(tmp_path / "c"), str(ready)))
    holder.start()
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

        def build(stage, out):
            raise AssertionError("built although another job did")

        path, status = StageCache(tmp_path / "c").obtain("translator", {"same": True}, "model.ckpt", build)
    finally:
        holder.join(60)
    assert status == "cached" and path.read_text() == "theirs"
    assert decisions[-1] == "cached" and decisions.count("wait") >= 3


def test_a_node_that_cannot_see_the_cache_is_named(tmp_path, monkeypatch):
    from nightseg.core.errors import DataError
    from nightseg.infra import cache as cache_module

    cache = StageCache(tmp_path / "cache" / "stages")
    cache.obtain("segmenter", {"x": 1}, "model.ckpt", lambda stage, out: out.write_text("w"))
    monkeypatch.setattr(cache_module.distributed, "all_gather",
                        lambda obj: [obj, ("node1", False)])
    with pytest.raises(DataError, match=r"model.ckpt exists for rank 0 but not for rank 1 \(node1\): "
                                        r"paths.cache_dir \(.*cache\) must be a directory shared"):
        cache.obtain("segmenter", {"x": 1}, "model.ckpt", lambda stage, out: None)
