"""The fault-injection matrix: kill, interrupt, race, corrupt, fill and poison nightseg runs on the
smoke preset, then rerun the same command and check that nothing was lost.

    python -m nightseg.faults --seed 0 --trials 5 --out experiments/reliability
    python -m nightseg.faults --cases kill9-segmenter,corrupt-ckpt --trials 2

Every case starts from a fresh cache directory under ``--work``. "Survived" means: the same command
rerun finishes; every published artefact is whole (model checkpoints load, every generated image
decodes, no temporaries of atomic writes are left in the cache); metrics.json equals the one of an
uninterrupted reference run (deterministic mode; ``timings_s`` is left out of the comparison, it
is wall-clock time, and ``checkpoints`` is compared relative to the cache directory, whose path
differs per case). Kill times are drawn from ``--seed`` inside each stage's time window, measured
on the reference run from events of the run (the cache's "building <stage>" and "stage <stage>:
trained" log lines, the panels directory, the process's exit) and applied relative to the same
event of the run being killed, so a busy machine shifts the windows but not where the kill lands.

The disk-full and unwritable-cache cases mount a small tmpfs (root only); where mounting is not
allowed they are reported as skipped. ``make test`` covers the same failures without mounting
(tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = ["experiment=smoke", "logger=csv", "trainer.deterministic=true", "strategy=augment", "night_count=8"]
# Events of a run, in order: (name, test on the run log's text or the run directory).
EVENTS: list[tuple[str, Callable[[str, Path], bool]]] = [
    ("start_translator", lambda log, run: "building translator" in log),
    ("end_translator", lambda log, run: "stage translator: trained" in log),
    ("start_generate", lambda log, run: "building night_images" in log),
    ("end_generate", lambda log, run: "stage generated_night: trained" in log),
    ("start_segmenter", lambda log, run: "building segmenter" in log),
    ("end_segmenter", lambda log, run: "stage segmenter: trained" in log),
    ("start_report", lambda log, run: (run / "panels").exists()),
]
# A stage's window: from one event to the next ("exit": the process ended).
WINDOWS = {"translator": ("start_translator", "end_translator"),
           "generate": ("start_generate", "end_generate"),
           "segmenter": ("start_segmenter", "end_segmenter"),
           "evaluate": ("end_segmenter", "start_report"),
           "report": ("start_report", "exit")}
ARTEFACTS = ("model.ckpt", "images", "gate.json")
RUN_TIMEOUT_S = 900


# ---- running nightseg --------------------------------------------------------------------------
@dataclass
class Run:
    """One nightseg process: its command, directories, exit status, events and output."""

    cache: Path
    run_dir: Path
    extra: list[str] = field(default_factory=list)
    returncode: int | None = None
    events: dict[str, float] = field(default_factory=dict)
    stderr: str = ""
    started: float = 0.0

    def command(self, python_prelude: str | None = None) -> list[str]:
        flags = [a for a in self.extra if a.startswith("-")]  # Hydra's flags before the overrides
        args = [*flags, *BASE, f"paths.cache_dir={self.cache}", f"hydra.run.dir={self.run_dir}",
                *(a for a in self.extra if not a.startswith("-"))]
        if python_prelude is None:
            return [sys.executable, "-m", "nightseg.run", *args]
        return [sys.executable, "-c", python_prelude, *args]

    def metrics(self) -> dict | None:
        path = self.run_dir / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def start(run: Run, prelude: str | None = None) -> subprocess.Popen:
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    run.started = time.monotonic()
    err = open(run.run_dir.parent / f"{run.run_dir.name}.stderr", "w")  # noqa: SIM115
    return subprocess.Popen(run.command(prelude), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=err, start_new_session=True)


def watch(run: Run, proc: subprocess.Popen, until: str | None = None,
          timeout: float = RUN_TIMEOUT_S) -> None:
    """Record the run's events (monotonic times) until event ``until`` or the process's exit."""
    log_path = run.run_dir / "run.log"
    deadline = time.monotonic() + timeout
    while True:
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        now = time.monotonic()
        for name, test in EVENTS:
            if name not in run.events and test(log, run.run_dir):
                run.events[name] = now
        if until is not None and until in run.events:
            return
        if proc.poll() is not None:
            run.events.setdefault("exit", time.monotonic())
            finish(run, proc)
            return
        if now > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            finish(run, proc)
            run.stderr += "\n[faults] timed out"
            return
        time.sleep(0.005)


def finish(run: Run, proc: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run.events.setdefault("exit", time.monotonic())
    run.returncode = proc.returncode
    err = run.run_dir.parent / f"{run.run_dir.name}.stderr"
    run.stderr = err.read_text(errors="replace") if err.exists() else ""


def complete(run: Run, prelude: str | None = None) -> Run:
    proc = start(run, prelude)
    watch(run, proc)
    return run


# ---- checking a cache and metrics ----------------------------------------------------------------
def comparable(metrics: dict | None, cache: Path) -> dict | None:
    """metrics.json without wall-clock timings, checkpoint paths relative to the cache."""
    if metrics is None:
        return None
    out = {k: v for k, v in metrics.items() if k not in ("timings_s", "stages")}
    out["checkpoints"] = {k: os.path.relpath(v, cache) for k, v in metrics.get("checkpoints", {}).items()}
    return out


def published(cache: Path) -> dict[str, tuple[int, int]]:
    """Every published artefact of the cache: path -> (inode, mtime_ns)."""
    out = {}
    for stage_dir in (cache / "stages").glob("*/*"):
        if not stage_dir.is_dir() or ".corrupt-" in stage_dir.name:
            continue
        for name in ARTEFACTS:
            p = stage_dir / name
            if p.exists():
                st = p.stat()
                out[str(p)] = (st.st_ino, st.st_mtime_ns)
    return out


def damage(cache: Path) -> tuple[list[str], list[str]]:
    """(torn published artefacts, temporaries of atomic writes) in the cache."""
    import torch
    from PIL import Image

    torn = []
    for path in published(cache):
        p = Path(path)
        try:
            if p.name == "model.ckpt":
                torch.load(p, map_location="cpu", weights_only=False)
            elif p.name == "images":
                for entry in json.loads((p / "manifest.json").read_text()):
                    for key in ("image", "label"):
                        with Image.open(p / entry[key]) as im:
                            im.load()
            else:
                json.loads(p.read_text())
        except Exception as e:  # noqa: BLE001  (any failure to read it is the finding)
            torn.append(f"{p} ({e.__class__.__name__})")
    temps = [str(p) for p in cache.rglob(".*.tmp")] if cache.exists() else []
    return torn, temps


@dataclass
class Trial:
    finished: bool = False
    equal: bool = False
    rebuilt: int = 0
    torn: int = 0
    temps: int = 0
    ok: bool | None = None  # the case's own criterion (detected, exit status, built once...)
    note: str = ""
    landed: bool | None = None  # kill / SIGTERM cases: the signal reached the run inside the window
    attempts: int = 1  # runs it took (a run that ended before its kill time is run again)


@dataclass
class CaseResult:
    case: str
    trials: list[Trial]
    wall_s: float
    criterion: str = ""
    skipped: str = ""

    def row(self) -> dict:
        t = self.trials
        row = {"case": self.case, "trials": len(t),
               "finished": sum(x.finished for x in t), "metrics_equal": sum(x.equal for x in t),
               "rebuilt_complete": sum(x.rebuilt for x in t), "torn": sum(x.torn for x in t),
               "temps_left": sum(x.temps for x in t),
               "criterion": self.criterion,
               "criterion_met": sum(bool(x.ok) for x in t) if self.criterion else None,
               "wall_s": round(self.wall_s, 1), "skipped": self.skipped,
               "notes": sorted({x.note for x in t if x.note}),
               "landed": None if t and t[0].landed is None else sum(bool(x.landed) for x in t),
               "attempts": sum(x.attempts for x in t),
               "detail": [vars(x) for x in t]}
        row["survived"] = bool(t) and not self.skipped and all(
            x.finished and x.equal and not x.torn and not x.temps and not x.rebuilt
            and (x.ok is None or x.ok) and (x.landed is None or x.landed) for x in t)
        return row


# ---- the harness ----------------------------------------------------------------------------------
class Harness:
    def __init__(self, work: Path, seed: int, trials: int):
        self.work, self.rng, self.trials = work, random.Random(seed), trials
        self.ref: Run | None = None
        self.windows: dict[str, float] = {}

    def fresh(self, case: str, trial: int) -> Path:
        d = self.work / case / f"t{trial}"
        if d.exists():
            _unmount_all(d)
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def reference(self) -> None:
        d = self.fresh("reference", 0)
        self.ref = complete(Run(d / "cache", d / "run"))
        if self.ref.returncode != 0:
            raise SystemExit(f"the reference run failed:\n{self.ref.stderr[-3000:]}")
        ev = self.ref.events
        self.windows = {stage: max(0.0, ev[b] - ev[a]) for stage, (a, b) in WINDOWS.items()}
        self.ref_metrics = comparable(self.ref.metrics(), self.ref.cache)

    def check_rerun(self, trial: Trial, rerun: Run, before: dict[str, tuple[int, int]]) -> None:
        trial.finished = rerun.returncode == 0
        trial.equal = comparable(rerun.metrics(), rerun.cache) == self.ref_metrics
        after = published(rerun.cache)
        trial.rebuilt = sum(after.get(p) != v for p, v in before.items())
        torn, temps = damage(rerun.cache)
        trial.torn, trial.temps = trial.torn + len(torn), len(temps)
        if not trial.finished and not trial.note:
            trial.note = _last_line(rerun.stderr)

    # -- kill -9 / SIGTERM at a random time inside a stage's window --------------------------------
    def interrupt(self, case: str, stage: str, sig: int) -> list[Trial]:
        trials = []
        for i in range(self.trials):
            for attempt in range(1, 4):  # a run that ends before its kill time is not a trial
                trial = self._interrupt_once(case, i, stage, sig)
                trial.attempts = attempt
                if trial.landed:
                    break
            trials.append(trial)
        return trials

    def _interrupt_once(self, case: str, i: int, stage: str, sig: int) -> Trial:
        start_event, end_event = WINDOWS[stage]
        d = self.fresh(case, i)
        run = Run(d / "cache", d / "run")
        proc = start(run)
        watch(run, proc, until=start_event)
        delay = self.rng.uniform(0, self.windows[stage])
        target = run.events.get(start_event, time.monotonic()) + delay
        while proc.poll() is None and time.monotonic() < target:
            time.sleep(0.002)
        trial = Trial()
        if proc.poll() is None:
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
        if sig == signal.SIGTERM:
            ckpts = list((run.cache / "stages").glob("*/*/work/last.ckpt"))
            # 143: run.main's status after SIGTERM; -15: ended by the signal itself (outside
            # training, before Lightning's handler), which a shell reports as 143 as well.
            trial.ok = run.returncode in (143, -signal.SIGTERM) and (
                stage not in ("translator", "segmenter") or bool(ckpts))
            if not trial.ok:
                trial.note = f"exit {run.returncode}, resume checkpoints {len(ckpts)}"
        before = published(run.cache)
        rerun = complete(Run(run.cache, d / "rerun"))
        if sig == signal.SIGTERM and stage in ("translator", "segmenter") and trial.ok:
            trial.ok = "resuming from" in (rerun.run_dir / "run.log").read_text(errors="replace")
            if not trial.ok:
                trial.note = "the rerun did not resume from the checkpoint"
        self.check_rerun(trial, rerun, before)
        return trial

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
                trial.note = _last_line(next(r.stderr for r in runs if r.returncode != 0))
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
        need = _du(self.ref.cache) + _du(self.ref.run_dir)
        for i in range(self.trials):
            d = self.fresh(case, i)
            mnt = d / "mnt"
            mnt.mkdir()
            if kind == "full":
                size = int(self.rng.uniform(0.05, 0.95) * need) // 4096 * 4096 + 4096
                _mount(mnt, f"size={size}")
                run = complete(Run(mnt / "cache", mnt / "run"))
            else:
                _mount(mnt, "size=64m")
                # Unwritable from the start, or after some stages were published.
                keep = self.rng.randint(0, 3)
                if keep:
                    shutil.copytree(self.ref.cache, mnt / "cache", symlinks=True)
                    for kind_dir in ("translator", "night_images", "segmenter")[keep - 1:]:
                        shutil.rmtree(mnt / "cache" / "stages" / kind_dir, ignore_errors=True)
                else:
                    (mnt / "cache").mkdir()
                _mount(mnt, "remount,ro")
                run = complete(Run(mnt / "cache", d / "run"))
            trial = Trial()
            err_lines = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
            trial.ok = (run.returncode not in (0, None) and len(err_lines) == 1
                        and "Traceback" not in run.stderr and str(mnt) in err_lines[0])
            if run.returncode == 0:
                trial.ok, trial.note = True, "fitted (the tmpfs was large enough)"
            elif not trial.ok:
                trial.note = _last_line(run.stderr)
            torn, _ = damage(run.cache)
            trial.torn = len(torn)
            _mount(mnt, "remount,rw,size=256m")  # space freed / made writable
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
            line = _last_line(run.stderr)
            published_stage = list((run.cache / "stages" / stage).glob("*/model.ckpt"))
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


def _corrupt(cache: Path, how: str, rng: random.Random) -> Path:
    stages = cache / "stages"
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
    elif how == "edit-spec":
        target = rng.choice(sorted(stages.glob("*/*/spec.json")))
        target.write_text(target.read_text().replace('"seed": 0', '"seed": 1', 1).replace("bf16", "16", 1))
    else:
        raise ValueError(how)
    return target


def _stage_dir(path: Path) -> Path:
    while path.parent.parent.name != "stages":
        path = path.parent
    return path


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _mount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True,
                   capture_output=True)


def _unmount_all(d: Path) -> None:
    for line in Path("/proc/mounts").read_text().splitlines():
        where = line.split()[1]
        if where.startswith(str(d)):
            subprocess.run(["umount", "-l", where], capture_output=True)


def _can_mount(work: Path) -> str:
    probe = work / "mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    try:
        _mount(probe, "size=1m")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        return f"mount not permitted here ({e.__class__.__name__})"
    subprocess.run(["umount", str(probe)], capture_output=True)
    return ""


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# ---- the matrix ----------------------------------------------------------------------------------
def cases(h: Harness) -> dict[str, tuple[str, Callable[[], list[Trial]]]]:
    """name -> (what the case-specific criterion is, the trials)."""
    out = {}
    for stage in WINDOWS:
        out[f"kill9-{stage}"] = ("", lambda s=stage: h.interrupt(f"kill9-{s}", s, signal.SIGKILL))
    for stage in ("translator", "segmenter"):
        out[f"sigterm-{stage}"] = ("exit 143, resume checkpoint written, rerun resumed",
                                   lambda s=stage: h.interrupt(f"sigterm-{s}", s, signal.SIGTERM))
    for n in (2, 4):
        out[f"parallel-{n}"] = ("each stage built once",
                                lambda n=n: h.parallel(f"parallel-{n}", n, joblib=False))
        out[f"joblib-{n}"] = ("each stage built once",
                              lambda n=n: h.parallel(f"joblib-{n}", n, joblib=True))
    for how in ("truncate-ckpt", "zero-ckpt", "delete-image", "edit-manifest", "edit-spec"):
        out[f"corrupt-{how}"] = ("the corrupted file named",
                                 lambda how=how: h.corrupt(f"corrupt-{how}", how))
    out["disk-full"] = ("one error line naming the tmpfs, no traceback",
                        lambda: h.storage("disk-full", "full"))
    out["unwritable-cache"] = ("one error line naming the cache, no traceback",
                               lambda: h.storage("unwritable-cache", "ro"))
    out["nan-loss"] = ("stage, epoch and step named; nothing published", lambda: h.nan("nan-loss"))
    out["deterministic-twice"] = ("stages as the reference's", lambda: h.determinism("deterministic-twice"))
    return out


def markdown(rows: list[dict]) -> str:
    head = ("| case | trials | finished | metrics equal | rebuilt complete artefacts | torn / temporaries "
            "left | case criterion | wall s | notes |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        crit = "" if not r["criterion"] else f"{r['criterion_met']}/{r['trials']} {r['criterion']}"
        notes = "; ".join(r["notes"])[:300]
        if r["skipped"]:
            notes = f"SKIPPED: {r['skipped']}"
        if r.get("landed") is not None:
            crit = (f"{r['landed']}/{r['trials']} signals inside the window ({r['attempts']} runs); "
                    + crit).rstrip("; ")
        status = "" if r["survived"] else "**FAILS** "
        lines.append(f"| {status}{r['case']} | {r['trials']} | {r['finished']} | {r['metrics_equal']} | "
                     f"{r['rebuilt_complete']} | {r['torn']} / {r['temps_left']} | {crit} | {r['wall_s']} "
                     f"| {notes} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times and corruptions")
    p.add_argument("--trials", type=int, default=5, help="trials per case (default 5)")
    p.add_argument("--cases", default="", help="comma-separated case names or prefixes (default: all)")
    p.add_argument("--work", default=os.environ.get("NIGHTSEG_FAULTS_DIR", ".cache/faults"),
                   help="where the cases' caches and runs go (emptied per case)")
    p.add_argument("--out", default="", help="directory for faults.md and faults.json (default: --work)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)
    work = Path(args.work).absolute()
    h = Harness(work, args.seed, args.trials)
    matrix = cases(h)
    if args.list:
        print("\n".join(matrix))
        return 0
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    chosen = [name for name in matrix if not wanted or any(name.startswith(w) for w in wanted)]
    if not chosen:
        raise SystemExit(f"error: --cases {args.cases} matches none of: {', '.join(matrix)}")
    no_mount = _can_mount(work) if any(c in ("disk-full", "unwritable-cache") for c in chosen) else ""
    t0 = time.monotonic()
    h.reference()
    print(f"reference run: {time.monotonic() - t0:.1f} s; stage windows (s): "
          + ", ".join(f"{k} {v:.2f}" for k, v in h.windows.items()), flush=True)
    out = Path(args.out).absolute() if args.out else work
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in chosen:
        criterion, fn = matrix[name]
        t = time.monotonic()
        if name in ("disk-full", "unwritable-cache") and no_mount:
            result = CaseResult(name, [], 0.0, criterion, skipped=no_mount)
        else:
            result = CaseResult(name, fn(), time.monotonic() - t, criterion)
        rows.append(result.row())
        print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        doc = {"seed": args.seed, "trials": args.trials, "windows_s": h.windows,
               "command": " ".join(["python -m nightseg.run", *BASE]), "rows": rows,
               "wall_s": round(time.monotonic() - t0, 1)}
        (out / "faults.json").write_text(json.dumps(doc, indent=2) + "\n")
        (out / "faults.md").write_text(markdown(rows) + "\n")
    print()
    print(markdown(rows))
    print(f"\n{sum(r['survived'] for r in rows)}/{len(rows)} cases survived; {time.monotonic() - t0:.0f} s "
          f"in all; {out / 'faults.md'}")
    return 0 if all(r["survived"] or r["skipped"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
