"""The fault-injection harness: the cases of python -m nightseg.faults (kill, interrupt, race,
corrupt, fill and poison smoke runs, rerun them, check what they leave) and their harness."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from nightseg.infra.cache import STAGES_DIR
from nightseg.tools.faults.runs import (
    WINDOWS,
    Run,
    Trial,
    comparable,
    complete,
    damage,
    du,
    finish,
    last_line,
    mount,
    published,
    signal_job,
    start,
    unmount_all,
    watch,
)


# ---- the harness ----------------------------------------------------------------------------------
class Harness:
    def __init__(self, work: Path, seed: int, trials: int):
        self.work, self.rng, self.trials = work, random.Random(seed), trials
        # The uninterrupted runs per number of DDP ranks: (run, stage windows, comparable metrics).
        self.refs: dict[int, tuple[Run, dict[str, float], dict | None]] = {}

    def fresh(self, case: str, trial: int) -> Path:
        d = self.work / case / f"t{trial}"
        if d.exists():
            unmount_all(d)
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def reference(self, ranks: int = 1) -> tuple[Run, dict[str, float], dict | None]:
        """The uninterrupted run on ``ranks`` processes (once), which trials are compared with."""
        if ranks not in self.refs:
            d = self.fresh("reference" if ranks == 1 else f"reference-ddp{ranks}", 0)
            ref = complete(Run(d / "cache", d / "run", ranks=ranks))
            if ref.returncode != 0:
                raise SystemExit(f"the reference run failed:\n{ref.stderr[-3000:]}")
            ev = ref.events
            windows = {stage: max(0.0, ev[b] - ev[a]) for stage, (a, b) in WINDOWS.items()}
            self.refs[ranks] = (ref, windows, comparable(ref.metrics(), ref.cache))
            on = "" if ranks == 1 else f" on {ranks} ranks"
            print(f"reference run{on}: {ev['exit'] - ref.started:.1f} s; stage windows (s): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in windows.items()), flush=True)
        return self.refs[ranks]

    # The one-process reference, which most cases use.
    ref = property(lambda self: self.reference()[0])
    windows = property(lambda self: self.reference()[1])
    ref_metrics = property(lambda self: self.reference()[2])

    def check_rerun(self, trial: Trial, rerun: Run, before: dict[str, tuple[int, int]]) -> None:
        trial.finished = rerun.returncode == 0
        trial.equal = comparable(rerun.metrics(), rerun.cache) == self.reference(rerun.ranks)[2]
        after = published(rerun.cache)
        trial.rebuilt = sum(after.get(p) != v for p, v in before.items())
        torn, temps = damage(rerun.cache)
        trial.torn, trial.temps = trial.torn + len(torn), len(temps)
        if not trial.finished and not trial.note:
            trial.note = last_line(rerun.stderr)

    # -- kill -9 / SIGTERM at a random time inside a stage's window --------------------------------
    def interrupt(self, case: str, stage: str, sig: int, ranks: int = 1) -> list[Trial]:
        trials = []
        for i in range(self.trials):
            for attempt in range(1, 4):  # a run that ends before its kill time is not a trial
                trial = self._interrupt_once(case, i, stage, sig, ranks)
                trial.attempts = attempt
                if trial.landed:
                    break
            trials.append(trial)
        return trials

    def _interrupt_once(self, case: str, i: int, stage: str, sig: int, ranks: int) -> Trial:
        start_event, end_event = WINDOWS[stage]
        windows = self.reference(ranks)[1]
        d = self.fresh(case, i)
        run = Run(d / "cache", d / "run", ranks=ranks)
        proc = start(run)
        watch(run, proc, until=start_event)
        delay = self.rng.uniform(0, windows[stage])
        target = run.events.get(start_event, time.monotonic()) + delay
        while proc.poll() is None and time.monotonic() < target:
            time.sleep(0.002)
        trial = Trial()
        if proc.poll() is None:
            if ranks > 1:
                signal_job(proc, sig)  # every rank (and torchrun), as Slurm signals every task
            else:
                os.killpg(proc.pid, sig)
            watch(run, proc)
        else:
            finish(run, proc)
            trial.note = "the run ended before the kill time"
        landed = start_event in run.events and trial.note == "" and (
            end_event == "exit" or end_event not in run.events or run.events[end_event] >= target)
        trial.landed = landed
        if not landed:
            trial.note = trial.note or f"the kill landed outside the {stage} window"
        torn, _ = damage(run.cache)
        trial.torn = len(torn)
        stopped_at: list[str] = []
        if sig == signal.SIGTERM:
            ckpts = list((run.cache / STAGES_DIR).glob("*/*/work/last.ckpt"))
            log_path = run.run_dir / "run.log"
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            # One line per rank that stopped a Trainer's training and saved the step.
            stopped_at = re.findall(r"training stopped at step (\d+)", log)
            if ranks == 1:
                # 143: run.main's status after SIGTERM; -15: ended by the signal itself (outside a
                # Trainer, where nothing holds it), which a shell reports as 143 as well.
                status = run.returncode in (143, -signal.SIGTERM)
                said = f"exit {run.returncode}"
            else:
                # torchrun exits 1 when signalled itself; each rank prints how it stopped, or none
                # does when the signal ended them outside a Trainer. A rank that does not end on
                # SIGTERM (a hang) is killed by torchrun after 30 s, which it logs.
                stops = run.stderr.count("stopped by SIGTERM")
                hung = "forcefully exiting" in run.stderr
                status = not hung and stops in (0, ranks)
                said = f"{stops} of {ranks} ranks stopped by SIGTERM" + (", one hung" if hung else "")
            trial.ok = (status and len(stopped_at) in (0, ranks) and len(set(stopped_at)) <= 1
                        and (bool(ckpts) or not stopped_at))
            if not trial.ok:
                trial.note = (f"{said}; training stopped at steps {stopped_at}, "
                              f"resume checkpoints {len(ckpts)}")
        before = published(run.cache)
        rerun = complete(Run(run.cache, d / "rerun", ranks=ranks))
        if stopped_at and trial.ok:
            trial.ok = "resuming from" in (rerun.run_dir / "run.log").read_text(errors="replace")
            if not trial.ok:
                trial.note = "the rerun did not resume from the checkpoint"
        self.check_rerun(trial, rerun, before)
        return trial

    # -- kill -9 while a data set is being prepared ----------------------------------------------
    def kill_prepare(self, case: str) -> list[Trial]:
        """The smoke sets take milliseconds to prepare: the run's writes are slowed (a prelude),
        so the kill lands inside a prepare stage; the rerun runs as usual."""
        trials = []
        for i in range(self.trials):
            d = self.fresh(case, i)
            run = Run(d / "cache", d / "run")
            proc = start(run, _slow_prepare_prelude())
            log_path = run.run_dir / "run.log"
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline and not (
                    log_path.exists() and "building prepared" in log_path.read_text(errors="replace")):
                time.sleep(0.005)
            trial = Trial()
            if proc.poll() is None:
                time.sleep(self.rng.uniform(0, PREPARE_SLOW_S * 4))  # the first set has 8 rows
                os.killpg(proc.pid, signal.SIGKILL)
                finish(run, proc)
                trial.landed = "prepared " not in (log_path.read_text(errors="replace")
                                                   .split("building prepared", 1)[-1])
            else:
                finish(run, proc)
                trial.landed, trial.note = False, "the run ended before the kill"
            torn, _ = damage(run.cache)
            trial.torn = len(torn)
            # Killed inside the first prepare stage: nothing of it may appear published.
            built = list((run.cache / STAGES_DIR / "prepared").glob("*/arrays"))
            trial.ok = not built if trial.landed else None
            before = published(run.cache)
            self.check_rerun(trial, complete(Run(run.cache, d / "rerun")), before)
            trials.append(trial)
        return trials

    # -- several processes on one cache ------------------------------------------------------------
    def parallel(self, case: str, n: int, joblib: bool) -> list[Trial]:
        trials = []
        for i in range(self.trials):
            d = self.fresh(case, i)
            cache = d / "cache"
            if joblib:
                runs = [Run(cache, d / "sweep", ["-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n}",
                                                 f"hydra.sweep.dir={d / 'sweep'}",
                                                 "seed=" + ",".join(["0"] * n)])]
            else:
                runs = [Run(cache, d / f"run{k}") for k in range(n)]
            procs = [start(r) for r in runs]
            for r, p in zip(runs, procs, strict=True):
                finish(r, p)
            trial = Trial(finished=all(r.returncode == 0 for r in runs))
            logs = list(d.rglob("run.log")) if joblib else [r.run_dir / "run.log" for r in runs]
            text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
            metric_files = sorted((d / "sweep").glob("*/metrics.json")) if joblib else \
                [r.run_dir / "metrics.json" for r in runs]
            metrics = [comparable(json.loads(p.read_text()), cache) if p.exists() else None
                       for p in metric_files]
            trial.equal = len(metrics) == n and all(m == self.ref_metrics for m in metrics)
            builds = {kind: text.count(f"building {kind} ") for kind in ("translator", "night_images",
                                                                         "segmenter")}
            trial.ok = all(v == 1 for v in builds.values())
            if not trial.ok:
                trial.note = f"builds {builds}"
            if not trial.finished:
                trial.note = last_line(next(r.stderr for r in runs if r.returncode != 0))
            torn, temps = damage(cache)
            trial.torn, trial.temps = len(torn), len(temps)
            trials.append(trial)
        return trials

    # -- a corrupted cache -------------------------------------------------------------------------
    def corrupt(self, case: str, how: str) -> list[Trial]:
        trials = []
        for i in range(self.trials):
            d = self.fresh(case, i)
            cache = d / "cache"
            shutil.copytree(self.ref.cache, cache, symlinks=True)
            target = _corrupt(cache, how, self.rng)
            before = published(cache)
            rerun = complete(Run(cache, d / "rerun"))
            trial = Trial()
            said = rerun.stderr + (rerun.run_dir / "run.log").read_text(errors="replace") \
                if (rerun.run_dir / "run.log").exists() else rerun.stderr
            trial.ok = str(target) in said
            if not trial.ok:
                trial.note = f"{target.name} not named"
            # The corrupted stage has to be rebuilt: not counted as a needless rebuild.
            before = {p: v for p, v in before.items() if not Path(p).is_relative_to(_stage_dir(target))}
            self.check_rerun(trial, rerun, before)
            trials.append(trial)
        return trials

    # -- a full disk, an unwritable cache ------------------------------------------------------------
    def storage(self, case: str, kind: str) -> list[Trial]:
        trials = []
        need = du(self.ref.cache) + du(self.ref.run_dir)
        for i in range(self.trials):
            d = self.fresh(case, i)
            mnt = d / "mnt"
            mnt.mkdir()
            if kind == "full":
                size = int(self.rng.uniform(0.05, 0.95) * need) // 4096 * 4096 + 4096
                mount(mnt, f"size={size}")
                run = complete(Run(mnt / "cache", mnt / "run"))
            else:
                mount(mnt, "size=64m")
                # Unwritable from the start, or after some stages were published.
                keep = self.rng.randint(0, 3)
                if keep:
                    shutil.copytree(self.ref.cache, mnt / "cache", symlinks=True)
                    for kind_dir in ("translator", "night_images", "segmenter")[keep - 1:]:
                        shutil.rmtree(mnt / "cache" / STAGES_DIR / kind_dir, ignore_errors=True)
                else:
                    (mnt / "cache").mkdir()
                mount(mnt, "remount,ro")
                run = complete(Run(mnt / "cache", d / "run"))
            trial = Trial()
            err_lines = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
            trial.ok = (run.returncode not in (0, None) and len(err_lines) == 1
                        and "Traceback" not in run.stderr and str(mnt) in err_lines[0])
            if run.returncode == 0:
                trial.ok, trial.note = True, "fitted (the tmpfs was large enough)"
            elif not trial.ok:
                trial.note = last_line(run.stderr)
            torn, _ = damage(run.cache)
            trial.torn = len(torn)
            mount(mnt, "remount,rw,size=256m")  # space freed / made writable
            before = published(run.cache)
            rerun = complete(Run(run.cache, run.run_dir.with_name("rerun")))
            self.check_rerun(trial, rerun, before)
            trials.append(trial)
        return trials

    # -- a NaN loss ----------------------------------------------------------------------------------
    def nan(self, case: str) -> list[Trial]:
        trials = []
        for i in range(self.trials):
            d = self.fresh(case, i)
            stage = ("segmenter", "translator")[i % 2]
            step = self.rng.randint(1, 3)
            run = complete(Run(d / "cache", d / "run"), _nan_prelude(stage, step))
            trial = Trial()
            line = last_line(run.stderr)
            published_stage = list((run.cache / STAGES_DIR / stage).glob("*/model.ckpt"))
            trial.ok = (run.returncode == 1 and line.startswith(f"error: stage {stage}: the training loss "
                                                                 "is not finite") and "by step" in line
                        and not published_stage)
            if not trial.ok:
                trial.note = line
            before = published(run.cache)
            self.check_rerun(trial, complete(Run(run.cache, d / "rerun")), before)
            trials.append(trial)
        return trials

    # -- the same command twice ------------------------------------------------------------------------
    def determinism(self, case: str) -> list[Trial]:
        trials = []
        for i in range(self.trials):
            d = self.fresh(case, i)
            run = complete(Run(d / "cache", d / "run"))
            trial = Trial()
            self.check_rerun(trial, run, {})
            m = run.metrics()
            trial.ok = m is not None and m.get("stages") == self.ref.metrics().get("stages")
            trials.append(trial)
        return trials


def _nan_prelude(stage: str, step: int) -> str:
    """A NaN in the stage's loss from training step ``step`` on (the same injection as the tests)."""
    if stage == "segmenter":
        patch = f'''
from nightseg.models.segmentation import SegmentationModule as M
real = M.training_step
def step(self, *a):
    loss = real(self, *a)
    return loss * float("nan") if self.global_step >= {step} else loss
M.training_step = step'''
    else:
        patch = f'''
from nightseg.models.cyclegan import CycleGANModule as M
real = M.training_step
def step(self, batch, batch_idx):
    out = real(self, batch, batch_idx)
    if self.global_step >= {2 * step}:
        self.log("train/loss_probe", float("nan"))
    return out
M.training_step = step'''
    return patch + '''
import runpy, sys
sys.argv[0] = "nightseg.run"
runpy.run_module("nightseg.run", run_name="__main__", alter_sys=True)
'''


# Seconds each prepared row's write takes under _slow_prepare_prelude.
PREPARE_SLOW_S = 0.05


def _slow_prepare_prelude() -> str:
    return f'''
import time
from nightseg.data.prepared import PreparedWriter as W
real = W.write
def write(self, *a):
    time.sleep({PREPARE_SLOW_S})
    return real(self, *a)
W.write = write
import runpy, sys
sys.argv[0] = "nightseg.run"
runpy.run_module("nightseg.run", run_name="__main__", alter_sys=True)
'''


def _corrupt(cache: Path, how: str, rng: random.Random) -> Path:
    stages = cache / STAGES_DIR
    if how in ("truncate-ckpt", "zero-ckpt"):
        target = rng.choice(sorted(stages.glob("*/*/model.ckpt")))
        size = target.stat().st_size
        if how == "truncate-ckpt":
            os.truncate(target, rng.randint(0, size - 1))
        else:
            target.write_bytes(bytes(size))
    elif how == "delete-image":
        target = rng.choice(sorted(stages.glob("night_images/*/images/images/*.png")))
        target.unlink()
    elif how == "edit-manifest":
        target = next(stages.glob("night_images/*/images/manifest.json"))
        manifest = json.loads(target.read_text())
        a, b = rng.sample(range(len(manifest)), 2)
        manifest[a]["image"], manifest[b]["image"] = manifest[b]["image"], manifest[a]["image"]
        target.write_text(json.dumps(manifest, indent=2) + "\n")
    elif how == "flip-prepared":
        # The night test set's prepared images (the one prepared set every rerun reads, even with
        # every trained stage cached): the same size, other bytes.
        spec = next(p for p in sorted(stages.glob("prepared/*/spec.json"))
                    if json.loads(p.read_text())["references"])
        target = spec.parent / "arrays" / "images.npy"
        with open(target, "r+b") as f:
            f.seek(target.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif how == "edit-spec":
        target = rng.choice(sorted(stages.glob("*/*/spec.json")))
        target.write_text(target.read_text().replace('"seed": 0', '"seed": 1', 1).replace("bf16", "16", 1))
    else:
        raise ValueError(how)
    return target


def _stage_dir(path: Path) -> Path:
    while path.parent.parent.name != STAGES_DIR:
        path = path.parent
    return path


# ---- the matrix ----------------------------------------------------------------------------------
def cases(h: Harness) -> dict[str, tuple[str, Callable[[], list[Trial]]]]:
    """name -> (what the case-specific criterion is, the trials)."""
    out = {}
    for stage in WINDOWS:
        out[f"kill9-{stage}"] = ("", lambda s=stage: h.interrupt(f"kill9-{s}", s, signal.SIGKILL))
    for stage in ("translator", "segmenter"):
        out[f"sigterm-{stage}"] = ("exit 143; a stop in training saved its step and the rerun resumed it",
                                   lambda s=stage: h.interrupt(f"sigterm-{s}", s, signal.SIGTERM))
    for stage in ("translator", "segmenter"):  # two gloo ranks under torchrun, both signalled
        out[f"sigterm-ddp-{stage}"] = (
            "no rank hung; both stopped (143 each) at one step, saved it and the rerun resumed it",
            lambda s=stage: h.interrupt(f"sigterm-ddp-{s}", s, signal.SIGTERM, ranks=2))
    for n in (2, 4):
        out[f"parallel-{n}"] = ("each stage built once",
                                lambda n=n: h.parallel(f"parallel-{n}", n, joblib=False))
        out[f"joblib-{n}"] = ("each stage built once",
                              lambda n=n: h.parallel(f"joblib-{n}", n, joblib=True))
    out["kill9-prepare"] = ("killed inside a prepare stage; no prepared set published by it",
                            lambda: h.kill_prepare("kill9-prepare"))
    for how in ("truncate-ckpt", "zero-ckpt", "delete-image", "edit-manifest", "edit-spec",
                "flip-prepared"):
        out[f"corrupt-{how}"] = ("the corrupted file named",
                                 lambda how=how: h.corrupt(f"corrupt-{how}", how))
    out["disk-full"] = ("one error line naming the tmpfs, no traceback",
                        lambda: h.storage("disk-full", "full"))
    out["unwritable-cache"] = ("one error line naming the cache, no traceback",
                               lambda: h.storage("unwritable-cache", "ro"))
    out["nan-loss"] = ("stage, epoch and step named; nothing published", lambda: h.nan("nan-loss"))
    out["deterministic-twice"] = ("stages as the reference's", lambda: h.determinism("deterministic-twice"))
    return out
