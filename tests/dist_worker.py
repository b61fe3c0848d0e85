"""Scenarios that tests/test_distributed.py runs in every rank of a distributed job:

    python -m torch.distributed.run --nproc_per_node=2 -m tests.dist_worker cache_race ...
    python -m torch.distributed.run --nproc_per_node=2 -m tests.dist_worker evaluate ...

Each uses nightseg as a job would and writes what it saw to ``--out`` for the test to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist


def _end_process_group() -> None:
    """Every rank done, then the group closed, before the interpreter exits: gloo's threads torn
    down at exit, or one rank closing while another still finishes a collective, can end a
    finished rank with SIGABRT ("terminate called without an active exception": seen once in CI,
    in cache_race)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def cache_race(args) -> None:
    """Two jobs need one artefact at once: the one that builds it runs collectives in its build
    (as Trainer.fit does); the other must reuse it on every rank."""
    dist.init_process_group("gloo")
    from nightseg.infra.cache import StageCache

    rank, shared = dist.get_rank(), Path(args.out)
    (shared / f"arrived_{args.job}_{rank}").touch()

    def build(stage, out: Path) -> None:
        with open(shared / "builds.log", "a") as f:
            f.write(f"{args.job} {rank}\n")
        # Keep building until the other job has arrived and looked for the artefact.
        deadline = time.monotonic() + 30
        while not list(shared.glob(f"arrived_{args.other}_*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)
        t = torch.ones(1)
        dist.all_reduce(t)
        if rank == 0:  # as Lightning saves checkpoints: rank zero writes
            out.write_text(f"built by {args.job}")

    path, status = StageCache(args.cache).obtain("translator", {"same": True}, "model.ckpt", build)
    seen = [None] * dist.get_world_size()
    dist.all_gather_object(seen, {"rank": rank, "status": status, "content": path.read_text()})
    if rank == 0:
        (shared / f"result_{args.job}.json").write_text(json.dumps(seen))
    _end_process_group()


def evaluate(args) -> None:
    """Score a fixed (seeded, untrained) segmenter on uneven val and test sets, raw and through a
    fixed translator, as the strategies do; rank zero writes the results."""
    from hydra.utils import instantiate

    from nightseg.inference.evaluation import evaluate as evaluate_sets
    from nightseg.infra import distributed
    from nightseg.infra.cache import stage_cache
    from nightseg.infra.job import Job
    from nightseg.infra.tracking import Tracker
    from nightseg.models.cyclegan import CycleGANModule
    from tests.conftest import compose_cfg

    world = int(os.environ.get("WORLD_SIZE", 1))
    cfg = compose_cfg(["experiment=smoke", "logger=csv", f"paths.cache_dir={args.cache}",
                       "trainer.accelerator=cpu", f"trainer.devices={world}",
                       "data.counts.val=3", "data.counts.test=5", "data.eval_batch_size=2"])
    catalog = instantiate(cfg.data.catalog)
    torch.manual_seed(0)
    segmenter = instantiate(cfg.model.segmenter, class_names=list(catalog.class_names))
    translator = CycleGANModule(generator={"_target_": "nightseg.nets.generator.ResnetGenerator",
                                           "ngf": 8, "n_blocks": 2})
    run_dir = Path(args.out) / f"run{world}"
    job = Job(cfg=cfg, run_dir=run_dir, cache=stage_cache(args.cache),
              tracker=Tracker(run_dir), catalog=catalog)
    raw = evaluate_sets(job, segmenter.eval(), catalog.val + catalog.test)
    translated = evaluate_sets(job, segmenter, catalog.test, translator=translator.eval())
    # One row per set and condition, with PSNR/SSIM where the set has true day references.
    results = [{**row, **ev.translation.get(row["test_set"], {})}
               for ev in (raw, translated) for row in ev.rows]
    if distributed.is_rank_zero():
        (Path(args.out) / f"results_{world}.json").write_text(json.dumps(results, indent=1))
    _end_process_group()


def resume(args) -> None:
    """Training under DDP with a checkpoint at every step, stopped before step ``--stop-at`` or
    resumed from ``--cache``/last.ckpt (tests/test_loaders.py's recorder): each rank writes the
    batches it trained on."""
    from nightseg.data.datamodules import SegmentationDataModule
    from tests.test_loaders import coordinate_set, fit_recording

    out = Path(args.out)
    data = coordinate_set(out)

    def dm(workers):
        return SegmentationDataModule([data], batch_size=1, num_workers=workers, train_crop=[32, 32],
                                      hflip=True)

    stop_at = int(args.stop_at) if args.stop_at else None
    module = fit_recording(dm, Path(args.cache), stop_at=stop_at, resume=args.job == "resume",
                           strategy="ddp", devices=int(os.environ["WORLD_SIZE"]))
    rank = int(os.environ["RANK"])
    (out / f"seen_{args.job}_{rank}.json").write_text(json.dumps(module.seen))
    _end_process_group()


def sigterm(args) -> None:
    """SIGTERM reaches each rank at its own moment (here rank 0 in step 2, rank 1 in step 4, both
    sending it to themselves): nightseg's Trainers must stop every rank after the same step and
    save it, where a rank stopping alone would leave the other waiting in a collective. The ranks
    agree every log_every_n_steps=2 steps (when 2, 4, ... steps are done), so both stop when 4 are
    done, before rank 1's own signal. Each rank writes the step it stopped at and the step of the
    checkpoint."""
    import signal

    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from nightseg.data.datamodules import SegmentationDataModule
    from nightseg.infra import preemption
    from nightseg.training.callbacks import CheckpointOnSigterm
    from tests.test_loaders import _Recorder, coordinate_set

    class SignalledAtItsStep(_Recorder):
        def training_step(self, batch, batch_idx):
            if self.global_step == 2 + 2 * self.global_rank:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            return super().training_step(batch, batch_idx)

    out = Path(args.out)
    dm = SegmentationDataModule([coordinate_set(out)], batch_size=1, train_crop=[32, 32])
    ckpt = Path(args.cache) / "last.ckpt"
    preemption.install()
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", strategy="ddp",
                         devices=int(os.environ["WORLD_SIZE"]), logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         log_every_n_steps=2,
                         callbacks=[preemption.StopOnSignal(), CheckpointOnSigterm(ckpt)])
    try:
        trainer.fit(SignalledAtItsStep(), datamodule=dm)
        stopped = False
    except SIGTERMException:
        stopped = True
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] if ckpt.exists() else None
    (out / f"sigterm_{trainer.global_rank}.json").write_text(json.dumps(
        {"stopped": stopped, "step": trainer.global_step, "checkpoint_step": saved}))
    _end_process_group()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["cache_race", "evaluate", "resume", "sigterm"])
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--job", default="a")
    p.add_argument("--other", default="b")
    p.add_argument("--stop-at", default="")
    args = p.parse_args()
    {"cache_race": cache_race, "evaluate": evaluate, "resume": resume,
     "sigterm": sigterm}[args.scenario](args)


if __name__ == "__main__":
    main()
