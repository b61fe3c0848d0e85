"""A Hydra callback for the preemption tests (tests/test_slurm.py), given on the command line as
``+hydra.callbacks.slow_steps._target_=tests.slow_steps.SlowSegmenterSteps``: it runs in the job's
own process (also a submitit task), where it makes segmenter steps slow enough to signal the job
during training, and tells the test when training has started and which process to signal."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hydra.experimental.callback import Callback


class SlowSegmenterSteps(Callback):
    """With NIGHTSEG_TEST_MARKER set: at segmenter step 1 write this process's id to that file;
    sleep 1 s a step while the file NIGHTSEG_TEST_SLOW_WHILE exists (the test removes it once it
    has sent the signal, so the resumed run trains at full speed)."""

    def on_job_start(self, config, **kwargs) -> None:
        marker = os.environ.get("NIGHTSEG_TEST_MARKER")
        if not marker:
            return
        slow = Path(os.environ["NIGHTSEG_TEST_SLOW_WHILE"])
        from nightseg.models.segmentation import SegmentationModule

        real_step = SegmentationModule.training_step

        def slow_step(module, *args):
            if module.global_step == 1 and not Path(marker).exists():
                Path(marker + ".tmp").write_text(str(os.getpid()))
                os.replace(marker + ".tmp", marker)  # whole, for the test polling it
            if slow.exists():
                time.sleep(1.0)
            return real_step(module, *args)

        SegmentationModule.training_step = slow_step
