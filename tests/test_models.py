"""LightningModules: one CycleGAN step trains all four nets; the schedules follow the spec."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nightseg.models.cyclegan import CycleGANModule, ImagePool, linear_decay
from nightseg.models.segmentation import SegmentationModule

SMALL_G = {"_target_": "nightseg.nets.generator.ResnetGenerator", "ngf": 8, "n_blocks": 2}
SMALL_D = {"_target_": "nightseg.nets.discriminator.PatchDiscriminator", "ndf": 8, "n_layers": 3}


class _Unpaired(Dataset):
    def __init__(self, n=2, hw=(40, 40)):
        g = torch.Generator().manual_seed(0)
        self.day = torch.rand(n, 3, *hw, generator=g)
        self.night = torch.rand(n, 3, *hw, generator=g) * 0.3

    def __len__(self):
        return len(self.day)

    def __getitem__(self, i):
        return {"day": self.day[i], "night": self.night[i]}


def _trainer(**kw):
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_cyclegan_step_changes_all_four_networks(channels_last):
    pl.seed_everything(0)
    module = CycleGANModule(SMALL_G, SMALL_D, epochs_constant=1, epochs_decay=0,
                            channels_last=channels_last)
    before = {n: copy.deepcopy(getattr(module, n).state_dict())
              for n in ("day2night", "night2day", "disc_day", "disc_night")}
    _trainer(max_steps=1).fit(module, DataLoader(_Unpaired(), batch_size=1))
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


def test_cyclegan_scheduler_steps_once_per_epoch():
    pl.seed_everything(0)
    module = CycleGANModule(SMALL_G, SMALL_D, lr=1e-3, epochs_constant=1, epochs_decay=2)
    _trainer(max_epochs=module.max_epochs, limit_train_batches=1).fit(
        module, DataLoader(_Unpaired(), batch_size=1))
    for opt in module.optimizers():
        # Stepped once per epoch: after 3 epochs the factor is linear_decay(1, 2)(3) = 0.
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * linear_decay(1, 2)(3))


def test_image_pool_returns_batch_and_remembers():
    pool = ImagePool(size=2)
    a = torch.zeros(3, 3, 4, 4)
    assert torch.equal(pool.query(a), a)
    assert len(pool.images) == 2
    out = pool.query(torch.ones(4, 3, 4, 4))
    assert out.shape == (4, 3, 4, 4)


class _Labelled(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        mask = torch.randint(0, 3, (32, 48), generator=g)
        mask[:2] = 255
        return {"image": torch.rand(3, 32, 48, generator=g), "mask": mask}


def test_segmentation_poly_schedule_and_training_step():
    pl.seed_everything(0)
    module = SegmentationModule(num_classes=3, class_names=["a", "b", "c"], lr=1e-3, max_epochs=2)
    before = copy.deepcopy(module.net.state_dict())
    _trainer(max_epochs=2).fit(module, DataLoader(_Labelled(), batch_size=4))
    # 2 epochs x 2 batches = 4 steps: lr = 1e-3 * (1 - 4/4)^0.9 = 0 at the end.
    assert module.optimizers().param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    after = module.net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_segmentation_rejects_wrong_class_weights():
    with pytest.raises(ValueError, match="class_weights"):
        SegmentationModule(num_classes=3, class_names=["a", "b", "c"], class_weights=[1.0, 2.0])
