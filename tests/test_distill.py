"""Distillation: a light student learns a trained teacher's outputs, through the stage cache."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from nightseg.models.cyclegan import CycleGANModule
from nightseg.models.distill import DistillationModule
from nightseg.run import run
from tests.conftest import SMALL_D, SMALL_G, UnpairedImages, compose_cfg, cpu_trainer

LIGHT = {"_target_": "nightseg.nets.light_generator.LightGenerator", "ngf": 8, "n_blocks": 2}


@pytest.mark.slow
def test_distillation_moves_students_towards_the_teacher():
    pl.seed_everything(0)
    teacher = CycleGANModule(SMALL_G, SMALL_D).eval()
    student = DistillationModule(LIGHT, lr=3e-3, epochs_constant=20, epochs_decay=0,
                                 channels_last=False)
    student.set_teacher(teacher)
    data = UnpairedImages(n=4, hw=(32, 32))
    x = data.night[:4]

    def gap() -> float:
        with torch.no_grad():
            return (student.translate(x) - teacher.translate(x)).abs().mean().item()

    before, teacher_state = gap(), copy.deepcopy(teacher.state_dict())
    cpu_trainer(max_epochs=student.max_epochs).fit(student, DataLoader(data, batch_size=2))
    student.eval()
    assert gap() < 0.8 * before  # a random teacher is hard to imitate fully; 0.16 -> 0.11 seen
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())
    assert not any(k.startswith("_teacher") for k in student.state_dict())  # not saved


@pytest.mark.slow
def test_distillation_without_teacher_fails_clearly():
    student = DistillationModule(LIGHT, epochs_constant=1, epochs_decay=0)
    with pytest.raises(RuntimeError, match="set_teacher"):
        cpu_trainer(max_epochs=1).fit(student, DataLoader(UnpairedImages(), batch_size=1))


@pytest.mark.slow
def test_night2day_inference_with_a_distilled_translator(tmp_path, smoke_overrides):
    tiny_teacher = ["model.translator.teacher.generator.ngf=8",
                    "model.translator.teacher.generator.n_blocks=2",
                    "model.translator.teacher.discriminator.ndf=8",
                    "model.translator.teacher.epochs_constant=1",
                    "model.translator.teacher.epochs_decay=0"]
    # The smoke preset shrinks CycleGAN keys a student does not have; drop them.
    overrides = smoke_overrides + ["model/translator=light_distilled", "~model.translator.discriminator",
                                   "~model.translator.num_sample_images"] + tiny_teacher
    m = run(compose_cfg(overrides), tmp_path / "a")
    assert m["stages"]["teacher"] in ("trained", "cached")
    assert m["stages"]["translator"] in ("trained", "cached")
    assert m["checkpoints"]["teacher"] != m["checkpoints"]["translator"]
    assert {r["condition"] for r in m["results"]} == {"raw", "night2day"}
    again = run(compose_cfg(overrides), tmp_path / "b")
    assert again["stages"]["translator"] == "cached"
    assert "teacher" not in again["stages"]  # a cached student needs no teacher
