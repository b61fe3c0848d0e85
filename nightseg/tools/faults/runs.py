"""Running nightseg under the fault-injection matrix (python -m nightseg.faults) and checking what a
run left behind: the smoke job's command, its events and stage windows, the published artefacts,
torn files and temporaries, metrics compared with the uninterrupted run's, and the table.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nightseg.core.paths import REPO
from nightseg.infra.cache import ARTEFACTS as STAGE_ARTEFACTS
from nightseg.infra.cache import STAGES_DIR

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
# What a published stage directory holds (nightseg.infra.cache owns the layout).
ARTEFACTS = tuple(sorted(set(STAGE_ARTEFACTS.values())))
RUN_TIMEOUT_S = 900


# ---- running nightseg --------------------------------------------------------------------------
@dataclass
class Run:
    """One nightseg job: its command, directories, exit status, events and output. ``ranks`` > 1:
    that many DDP processes on the CPU (gloo), started by torchrun."""

    cache: Path
    run_dir: Path
    extra: list[str] = field(default_factory=list)
    ranks: int = 1
    returncode: int | None = None
    events: dict[str, float] = field(default_factory=dict)
    stderr: str = ""
    started: float = 0.0

    def command(self, python_prelude: str | None = None) -> list[str]:
        flags = [a for a in self.extra if a.startswith("-")]  # Hydra's flags before the overrides
        args = [*flags, *BASE, f"paths.cache_dir={self.cache}", f"hydra.run.dir={self.run_dir}",
                *(a for a in self.extra if not a.startswith("-"))]
        if self.ranks > 1:
            if python_prelude is not None:
                raise ValueError("a prelude runs one process; not under torchrun")
            return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.ranks}",
                    "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "nightseg.run",
                    *args, f"trainer.devices={self.ranks}"]
        if python_prelude is None:
            return [sys.executable, "-m", "nightseg.run", *args]
        return [sys.executable, "-c", python_prelude, *args]

    def metrics(self) -> dict | None:
        path = self.run_dir / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it), so parallel jobs do not clash."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def signal_job(proc: subprocess.Popen, sig: int) -> None:
    """``sig`` to every process of the job, as Slurm signals every task of a job step: the job's
    process group, and the processes below it in sessions of their own (torchrun's ranks)."""
    pids = descendants(proc.pid)
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # the job ended meanwhile
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


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
            signal_job(proc, signal.SIGKILL)
            proc.wait()
            finish(run, proc)
            run.stderr += "\n[faults] timed out"
            return
        time.sleep(0.005)


def finish(run: Run, proc: subprocess.Popen, timeout: float = RUN_TIMEOUT_S) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        signal_job(proc, signal.SIGKILL)
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
    """metrics.json without wall-clock timings and which stages were built or reused, checkpoint
    paths relative to the cache."""
    if metrics is None:
        return None
    out = {k: v for k, v in metrics.items() if k not in ("timings_s", "stages", "prepared")}
    out["checkpoints"] = {k: os.path.relpath(v, cache) for k, v in metrics.get("checkpoints", {}).items()}
    return out


def published(cache: Path) -> dict[str, tuple[int, int]]:
    """Every published artefact of the cache: path -> (inode, mtime_ns)."""
    out = {}
    for stage_dir in (cache / STAGES_DIR).glob("*/*"):
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

    from nightseg.data.prepared import PreparedArrays

    torn = []
    for path in published(cache):
        p = Path(path)
        try:
            if p.name == "model.ckpt":
                torch.load(p, map_location="cpu", weights_only=False)
            elif p.name == "arrays":  # prepared data: every row readable
                arrays = PreparedArrays(p)
                for row in range(len(arrays)):
                    if row not in arrays.errors:
                        arrays.read(row)
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


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mount(mnt: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True,
                   capture_output=True)


def unmount_all(d: Path) -> None:
    for line in Path("/proc/mounts").read_text().splitlines():
        where = line.split()[1]
        if where.startswith(str(d)):
            subprocess.run(["umount", "-l", where], capture_output=True)


def can_mount(work: Path) -> str:
    probe = work / "mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    try:
        mount(probe, "size=1m")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        return f"mount not permitted here ({e.__class__.__name__})"
    subprocess.run(["umount", str(probe)], capture_output=True)
    return ""


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""



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
