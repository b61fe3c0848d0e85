"""LightningDataModules over catalog sample sets, with albumentations joint transforms.

All DataModules produce the same batch keys: ``image``/``mask`` (plus ``reference`` where a set
has paired other-domain images) for segmentation, ``day``/``night`` for translation. Loader workers
send uint8; a model receives float images in [0, 1] and long masks, converted on its device, and
normalizes its own input.

Training sets are ordered and sharded over the DDP ranks by :class:`ResumableSampler`, which also
seeds every sample's augmentation, so a stage resumed in the middle of an epoch trains on exactly
the batches the uninterrupted run did. Evaluation sets are sharded by :class:`EvalShards`:
Lightning's sampler would pad them with repeated images, which would then count twice in the
scores.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import warnings
from collections.abc import Sequence
from functools import partial

import albumentations as A
import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from nightseg.data.catalog import SampleSet
from nightseg.data.io import SegmentationDataset, UnpairedDataset, batch_to_float, collate_skipping
from nightseg.infra.hardware import uses_cuda

log = logging.getLogger(__name__)


def build_transform(resize: Sequence[int] | None = None, crop: Sequence[int] | None = None,
                    hflip: bool = False) -> A.Compose:
    """Resize to ``resize`` = [H, W] (area for images, nearest for labels), then a random
    ``crop`` = [h, w] and a random horizontal flip, applied alike to image, mask and reference."""
    ops: list[A.BasicTransform] = []
    if resize is not None:
        h, w = (int(v) for v in resize)
        ops.append(A.Resize(h, w, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST))
    if crop is not None:
        h, w = (int(v) for v in crop)
        ops.append(A.RandomCrop(h, w, pad_if_needed=True, fill_mask=255))
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    return A.Compose(ops, additional_targets={"reference": "image"})


def seed_transforms(dataset: Dataset, entropy: Sequence[int]) -> None:
    """Give every albumentations pipeline in ``dataset`` (and UnpairedDataset's night draw) a
    random state drawn from ``entropy``: per sample in training (:class:`SeededSamples`), per
    loader worker elsewhere.

    albumentations 2.x keeps a random state per pipeline, created once where the pipeline is built
    (the main process) and untouched by seed_everything: without this, every loader worker would
    replay the same crops and flips, and no two runs would crop alike. Each pipeline gets one
    generator for all its transforms (albumentations' own ``seed=`` hands every transform the
    same seed, which ties a crop's position to its flip).
    """
    pipelines = _pipelines(dataset)
    for pipeline, seq in zip(pipelines, np.random.SeedSequence(list(entropy)).spawn(len(pipelines)),
                             strict=True):
        state = seq.generate_state(2, dtype=np.uint64)
        pipeline.set_random_state(np.random.default_rng(state[0]), random.Random(int(state[1])))


def init_worker(worker_id: int, rank: int = 0) -> None:
    """A loader worker's set-up: OpenCV single-threaded (the workers are the parallelism; its
    thread pool in each of them only oversubscribes the cores), Lightning's per-worker seeding
    when seed_everything(workers=True) asked for it, and augmentation seeds of its own."""
    cv2.setNumThreads(0)
    # A scheduler's SIGTERM reaches every process of the job. The main process stops training at
    # the next step and saves a resume checkpoint (stages._fit); a worker killed by it first
    # would turn that into a DataLoader error instead. Workers end with the main process. The same
    # for Slurm's requeue signals (nightseg.infra.preemption), which end a process by default.
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    info = torch.utils.data.get_worker_info()
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning_fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id, rank)
    # The worker seed is drawn from the loader's generator (reproducible after seed_everything)
    # plus the worker id; the rank keeps ranks from cropping alike. (Training samples are seeded
    # one by one instead, SeededSamples.)
    seed_transforms(info.dataset, [info.seed, rank])


class EvalShards(DistributedSampler):
    """Evaluation under DDP: the batches of a one-process evaluation dealt to the ranks in turn.

    Every image is scored once, and in the same batch as on one process, so the scores equal the
    one-process scores exactly (Lightning's DistributedSampler would pad the set with repeated
    images, which then count twice). A rank with one batch fewer gets a placeholder batch
    instead (index ``len(dataset)``, see :class:`EvalSet`): every rank runs the same number of
    steps, and none is left without a batch, which would make Lightning skip its epoch-end hooks,
    where the metrics of all ranks meet.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        n = len(dataset)
        batches = -(-n // batch_size)
        mine = range(rank, batches, num_replicas)
        self.indices = [i for b in mine for i in range(b * batch_size, min((b + 1) * batch_size, n))]
        # The ranks short of a batch never hold the (possibly short) last one, so the placeholder
        # forms a batch of its own.
        self.indices += [n] * (-(-batches // num_replicas) - len(mine))
        self.num_samples = len(self.indices)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EvalSet(Dataset):
    """An evaluation dataset that answers EvalShards' placeholder index with ``{"pad": True}``:
    a batch without images, which the model's evaluation step passes over."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return {"pad": True} if i == len(self.dataset) else self.dataset[i]

    def transforms(self) -> list:
        return self.dataset.transforms()


def make_loader(dataset, batch_size: int, num_workers: int, shuffle: bool, drop_last: bool = False,
                sampler=None, rank: int = 0, pin_memory: bool = False,
                generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader of nightseg batches (see collate_skipping) whose workers run init_worker."""
    if num_workers == 0:  # the main process loads: seed from its torch seed (seed_everything's)
        seed_transforms(dataset, [torch.initial_seed(), rank])
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate_skipping,
        worker_init_fn=partial(init_worker, rank=rank) if num_workers > 0 else None,
        pin_memory=pin_memory,
        # Every new iterator draws a seed from its loader's generator. Without one of its own, an
        # evaluation loader would draw from the global generator at each validation when loading
        # in the main process (persistent workers draw once), shifting every later dropout mask:
        # the weights would then depend on data.num_workers.
        generator=generator if generator is not None else torch.Generator(),
    )


class ResumableSampler(DistributedSampler):
    """The training order: epoch ``e`` is a permutation drawn from ``seed + e`` and dealt to the
    ranks (DistributedSampler's order and padding; one rank alone gets the whole permutation), and
    every index comes with the entropy of its augmentation, ``(seed, e, index)`` (see
    :class:`SeededSamples`). So a training batch depends on the seed, the epoch and its position
    only: not on the loader workers, nor on what was loaded before it. That makes a resume from
    the middle of an epoch exact: the first iteration after :meth:`resume_at` leaves out the
    batches the checkpoint had trained on and goes on with the very batches the uninterrupted run
    saw next. (A plain DataLoader restarts the epoch with a new order; Lightning restores no
    loader position.) Lightning calls ``set_epoch`` each epoch and, this being a
    DistributedSampler, keeps it under DDP instead of wrapping it.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._skip = 0

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """The next iteration is epoch ``epoch`` without its first ``samples_done`` samples."""
        self.set_epoch(epoch)
        self._skip = samples_done

    def __iter__(self):
        skip, self._skip = self._skip, 0
        epoch = self.epoch
        for i in itertools.islice(super().__iter__(), skip, None):
            yield i, (self.seed, epoch, i)


class SeededSamples(Dataset):
    """Item ``(index, entropy)`` of a ResumableSampler: sample ``index`` of ``dataset``, its
    augmentation generators (every albumentations pipeline, UnpairedDataset's night draw) first
    seeded from ``entropy`` (:func:`seed_transforms`). A plain index is the dataset's own item."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, Sequence[int]]):
        if isinstance(item, int):
            return self.dataset[item]
        index, entropy = item
        seed_transforms(self.dataset, entropy)
        return self.dataset[index]

    def transforms(self) -> list:
        return _pipelines(self.dataset)


# Lightning warns at every resume in the middle of an epoch that a loader without state_dict may
# train on other batches than the uninterrupted run: nightseg's training loaders resume exactly
# (the DataModule holds their state, ResumableSampler), so the warning would only mislead.
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch",
                        category=PossibleUserWarning)


class _DataModule(pl.LightningDataModule):
    """What both DataModules do with the Trainer they are attached to."""

    def _rank(self) -> tuple[int, int]:
        """(world size, global rank) of the attached Trainer."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _pin_memory(self) -> bool:
        """Page-locked batches copy to a GPU asynchronously; on the CPU they only cost memory."""
        return self.trainer is not None and uses_cuda(self.trainer.accelerator)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return batch_to_float(batch)

    # A resume checkpoint holds the training sampler's seed, epoch and the batches of that epoch
    # trained on: Lightning saves state_dict() with every checkpoint and calls load_state_dict()
    # before it asks for the training loader, whose first batch it fetches at once. With that the
    # resumed stage goes on with the batch the uninterrupted run trained on next, augmented alike.
    # Every rank holds the same state (one seed, broadcast from rank zero), so rank zero's, which
    # is the one saved, serves them all.
    _sampler: ResumableSampler | None = None
    _pending: dict | None = None

    def state_dict(self) -> dict:
        if self._sampler is None:
            return {}
        # Where training goes on: the batches of the sampler's epoch whose training step ran, by
        # the time of every checkpoint (a periodic one at on_train_batch_end, a SIGTERM's after the
        # step, an epoch end's alike); an epoch whose batches were all trained (of
        # limit_train_batches, if fewer: num_training_batches) is followed by the next from its start.
        epoch, done = self._sampler.epoch, 0
        if self.trainer is not None:
            done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
            if done >= self.trainer.num_training_batches:
                epoch, done = epoch + 1, 0
        return {"sampler": {"seed": self._sampler.seed, "epoch": epoch, "batches": done}}

    def load_state_dict(self, state: dict) -> None:
        self._pending = state.get("sampler")

    def _train_loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        world, rank = self._rank()
        saved, self._pending = self._pending, None
        if saved is not None:
            seed = int(saved["seed"])
        else:
            # Drawn like RandomSampler's seed (reproducible after seed_everything), rank zero's
            # for all ranks: they must deal out one permutation.
            seed = int(torch.empty((), dtype=torch.int64).random_().item()) % 2**62
            if self.trainer is not None and world > 1:
                seed = int(self.trainer.strategy.broadcast(seed, src=0))
        sampler = ResumableSampler(dataset, seed, num_replicas=world, rank=rank)
        # The loader's own generator: creating its iterator must not draw from the global one,
        # which a resumed run restores at the checkpoint's step (nightseg.training.resume); an extra draw
        # there would shift every later dropout mask and history-pool draw.
        loader = make_loader(SeededSamples(dataset), self.batch_size, self.num_workers, shuffle=False,
                             sampler=sampler, rank=rank, pin_memory=self._pin_memory(),
                             generator=torch.Generator().manual_seed(seed), **kwargs)
        # Where training goes on, from the checkpoint alone (state_dict): Lightning asks for this
        # loader before it restores its loops when an epoch budget's schedule needs
        # estimated_stepping_batches (SegmentationModule), and fetches the first batch at once.
        # (Lightning's own set_epoch comes after that first batch, with the same epoch.)
        epoch, batches = (int(saved["epoch"]), int(saved["batches"])) if saved is not None else (0, 0)
        if batches:
            log.info("training resumes in epoch %d after its first %d batches, in the same order",
                     epoch, batches)
        sampler.resume_at(epoch, batches * self.batch_size)
        self._sampler = sampler
        return loader


def _pipelines(dataset: Dataset) -> list:
    """The albumentations pipelines of a dataset, in seed_transforms's order."""
    sets = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    return [t for d in sets if hasattr(d, "transforms") for t in d.transforms()]


class SegmentationDataModule(_DataModule):
    """Labelled training sets (concatenated), named validation sets and named test sets.

    ``val_sets``/``test_sets`` keep their order: dataloader index ``i`` is set ``i``, and the
    SegmentationModule reads the set names and class mappings from here.
    """

    def __init__(self, train_sets: Sequence[SampleSet], val_sets: Sequence[SampleSet] = (),
                 test_sets: Sequence[SampleSet] = (), num_classes: int = 19, batch_size: int = 8,
                 eval_batch_size: int = 8, num_workers: int = 0,
                 resize: Sequence[int] | None = None, train_crop: Sequence[int] | None = None,
                 hflip: bool = True, on_error: str = "raise"):
        super().__init__()
        self.train_sets = list(train_sets)
        self.val_sets = list(val_sets)
        self.test_sets = list(test_sets)
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.resize, self.train_crop, self.hflip = resize, train_crop, hflip
        self.on_error = on_error

    def _dataset(self, s: SampleSet, train: bool = False) -> SegmentationDataset:
        # A set with a size of its own (SampleSet.resize) keeps it; the others take data.resize.
        resize = s.resize or self.resize
        transform = (build_transform(resize, self.train_crop, self.hflip) if train
                     else build_transform(resize))
        # A set scored in its own class space (eval_classes) holds labels of those classes.
        num_classes = len(s.eval_classes) if s.eval_classes else self.num_classes
        return SegmentationDataset(s, transform, num_classes, self.on_error, replace_skipped=train)

    def train_dataloader(self) -> DataLoader:
        ds = ConcatDataset([self._dataset(s, train=True) for s in self.train_sets])
        drop_last = len(ds) > self.batch_size  # BatchNorm needs more than one sample
        return self._train_loader(ds, drop_last=drop_last)

    def _eval_loaders(self, sets: list[SampleSet]) -> list[DataLoader]:
        world, rank = self._rank()
        loaders = []
        for s in sets:
            ds = self._dataset(s)
            shards = None
            if world > 1:
                ds = EvalSet(ds)
                shards = EvalShards(ds, self.eval_batch_size, world, rank)
            loaders.append(make_loader(ds, self.eval_batch_size, self.num_workers, shuffle=False,
                                       sampler=shards, rank=rank, pin_memory=self._pin_memory()))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.val_sets)

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.test_sets)

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.test_sets)


class TranslationDataModule(_DataModule):
    """Unpaired day and night images for the CycleGAN, randomly cropped for training."""

    def __init__(self, day: SampleSet, night: SampleSet, batch_size: int = 1, num_workers: int = 0,
                 resize: Sequence[int] | None = None, crop: Sequence[int] | None = None,
                 hflip: bool = True, on_error: str = "raise"):
        super().__init__()
        self.day, self.night = day, night
        self.batch_size = batch_size
        self.num_workers = num_workers
        # Each domain at its own size where its set has one (SampleSet.resize), then cropped alike.
        self.day_transform = build_transform(day.resize or resize, crop, hflip)
        self.night_transform = build_transform(night.resize or resize, crop, hflip)
        self.on_error = on_error

    def train_dataloader(self) -> DataLoader:
        ds = UnpairedDataset(self.day, self.night, self.day_transform, self.on_error,
                             night_transform=self.night_transform)
        return self._train_loader(ds, drop_last=True)
