"""LightningModules: one CycleGAN step trains all four nets; the schedules follow the spec."""

import copy
import random

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nightseg.models.cyclegan import CycleGANModule, ImagePool, linear_decay
from nightseg.models.segmentation import SegmentationModule
from tests.conftest import SMALL_D, SMALL_G, UnpairedImages, cpu_trainer


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [False, True])
def test_one_cyclegan_step_changes_all_four_networks(channels_last):
    pl.seed_everything(0)
    module = CycleGANModule(SMALL_G, SMALL_D, epochs_constant=1, epochs_decay=0,
                            channels_last=channels_last)
    before = {n: copy.deepcopy(getattr(module, n).state_dict())
              for n in ("day2night", "night2day", "disc_day", "disc_night")}
    cpu_trainer(max_steps=1).fit(module, DataLoader(UnpairedImages(), batch_size=1))
    for name, state in before.items():
        after = getattr(module, name).state_dict()
        changed = [k for k in state if not torch.equal(state[k], after[k])]
        assert changed, f"{name} did not change after one training step"


def test_cyclegan_translate_keeps_range_and_size():
    module = CycleGANModule(SMALL_G, SMALL_D).eval()
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        for direction in ("night2day", "day2night"):
            y = module.translate(x, direction)
            assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def test_cyclegan_learning_rate_constant_then_linear_to_zero():
    f = linear_decay(epochs_constant=3, epochs_decay=4)
    factors = [f(e) for e in range(7)]
    # CycleGAN: constant for 3 epochs, then down by 1/(decay+1) per epoch.
    assert factors[:3] == [1.0, 1.0, 1.0]
    assert factors[3:] == pytest.approx([0.8, 0.6, 0.4, 0.2])


@pytest.mark.slow
def test_cyclegan_scheduler_steps_once_per_epoch():
    pl.seed_everything(0)
    module = CycleGANModule(SMALL_G, SMALL_D, lr=1e-3, epochs_constant=1, epochs_decay=2)
    cpu_trainer(max_epochs=module.max_epochs, limit_train_batches=1).fit(
        module, DataLoader(UnpairedImages(), batch_size=1))
    for opt in module.optimizers():
        # Stepped once per epoch: after 3 epochs the factor is linear_decay(1, 2)(3) = 0.
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * linear_decay(1, 2)(3))


def _tagged(*values: float) -> torch.Tensor:
    """One (1, 2, 2) image per value, filled with it: the value tells an image apart."""
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def _tags(images) -> list[float]:
    return [float(img.flatten()[0]) for img in images]


def test_image_pool_fills_then_mixes_history_into_the_batch():
    """Shrivastava et al. (2017), as CycleGAN uses it: the first ``size`` fakes are stored and
    returned as they are; after that each fake is, with probability 1/2, swapped for a random
    stored one (which it replaces in the pool), else returned itself."""
    random.seed(0)
    pool = ImagePool(size=3)
    assert _tags(pool.query(_tagged(1, 2))) == [1, 2]  # filling: returned as given...
    assert _tags(pool.images) == [1, 2]                  # ...and remembered
    assert _tags(pool.query(_tagged(3, 4, 5)))[0] == 3  # the third fills the pool
    assert len(pool.images) == 3
    history = {1.0, 2.0, 3.0, 4.0, 5.0}
    returned_old = kept_new = 0
    for step in range(40):
        new = 100.0 + step
        before = set(_tags(pool.images))
        (out,) = _tags(pool.query(_tagged(new)))
        after = set(_tags(pool.images))
        assert len(pool.images) == 3  # never grows past its size
        if out == new:  # passed through: the pool is unchanged
            kept_new += 1
            assert after == before
        else:  # an earlier fake came back, and the new one took its place
            returned_old += 1
            assert out in before and out not in after and new in after
            assert out in history
        history.add(new)
    assert returned_old > 5 and kept_new > 5  # both branches, about half each
    # size 0 turns the pool off: every batch comes back as it is, nothing is stored
    off = ImagePool(size=0)
    batch = _tagged(7, 8)
    assert off.query(batch) is batch and off.images == []


class _Labelled(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        mask = torch.randint(0, 3, (32, 48), generator=g)
        mask[:2] = 255
        return {"image": torch.rand(3, 32, 48, generator=g), "mask": mask}


@pytest.mark.slow
def test_segmentation_poly_schedule_and_training_step():
    pl.seed_everything(0)
    module = SegmentationModule(num_classes=3, class_names=["a", "b", "c"], lr=1e-3, max_epochs=2)
    before = copy.deepcopy(module.net.state_dict())
    cpu_trainer(max_epochs=2).fit(module, DataLoader(_Labelled(), batch_size=4))
    # 2 epochs x 2 batches = 4 steps: lr = 1e-3 * (1 - 4/4)^0.9 = 0 at the end.
    assert module.optimizers().param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    after = module.net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_segmentation_rejects_wrong_class_weights():
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationModule(num_classes=3, class_names=["a", "b", "c"], class_weights=[1.0, 2.0])
