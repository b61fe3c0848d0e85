"""Starting distributed jobs from tests: torchrun and Slurm-like command lines, and
process groups that are killed (by id) when a job overruns its timeout instead of hanging the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nightseg.tools.faults.runs import signal_job
from tests.conftest import REPO


def env(**extra: str) -> dict[str, str]:
    """The test's environment for a child job: this worktree's nightseg, one thread per process
    (two cores for two ranks), no wandb account."""
    out = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    out.pop("PYTEST_CURRENT_TEST", None)
    out.update(extra)
    return out


def torchrun(nproc: int, port: int, *args: str, nnodes: int = 1, node_rank: int = 0) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            f"--nnodes={nnodes}", f"--node_rank={node_rank}", "--master_addr=127.0.0.1",
            f"--master_port={port}", *args]


def slurm_env(procid: int, ntasks: int, port: int) -> dict[str, str]:
    """The variables srun sets for one task of ``srun --ntasks-per-node=N`` on one node (the ones
    Lightning's SLURMEnvironment reads), with MASTER_ADDR/PORT as a job script exports them."""
    return {"SLURM_NTASKS": str(ntasks), "SLURM_NTASKS_PER_NODE": str(ntasks), "SLURM_NNODES": "1",
            "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid), "SLURM_NODEID": "0",
            "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "nightseg", "SLURM_NODELIST": "127.0.0.1",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


@dataclass
class Finished:
    returncode: int | None  # None: killed at the timeout
    output: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def run_all(jobs: list[tuple[list[str], dict[str, str]]], timeout: float, log_dir: Path) -> list[Finished]:
    """Start every job at once (each in a session of its own, output to a file), wait for all of
    them up to ``timeout`` seconds in total, and kill the process group of any still running."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, logs = [], []
    ends: list[float | None] = [None] * len(jobs)
    start = time.monotonic()
    try:
        for i, (cmd, job_env) in enumerate(jobs):
            log = open(log_dir / f"job{i}.log", "w+")  # closed below, after the job ends
            logs.append(log)
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=job_env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        while time.monotonic() - start < timeout and any(e is None for e in ends):
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if ends[i] is None and p.poll() is not None:
                    ends[i] = time.monotonic() - start
    finally:
        for i, p in enumerate(procs):
            if ends[i] is None:  # still running at the timeout (or the test was interrupted)
                signal_job(p, signal.SIGKILL)  # launcher and ranks (own sessions)
                p.wait(10)
    results = []
    for p, log, end in zip(procs, logs, ends, strict=True):
        log.seek(0)
        results.append(Finished(None if end is None else p.returncode, log.read(),
                                timeout if end is None else end))
        log.close()
    return results


def check(results: list[Finished]) -> None:
    """Fail with the tail of the first job that hung or failed."""
    for i, r in enumerate(results):
        what = f"timed out after {r.seconds:.0f} s" if r.timed_out else f"exited {r.returncode}"
        assert r.returncode == 0, f"job {i} {what}:\n{r.output[-4000:]}"
