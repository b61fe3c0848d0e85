"""The prediction loop's step: a batch of frames through the pipeline, back to each frame's own size,
written by a Writer."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nightseg.inference.frames import Frame
from nightseg.inference.submission import SubmissionWriter
from nightseg.inference.writers import Writer


class Predictor:
    """Runs the pipeline over batches of frames and writes their outputs (a submission's writer
    also gets each pixel's softmax confidence)."""

    def __init__(self, pipeline, writer: Writer | SubmissionWriter, device: torch.device,
                 dtype: torch.dtype | None):
        self.pipeline = pipeline.to(device).eval()
        self.writer, self.device, self.dtype = writer, device, dtype

    @torch.inference_mode()
    def __call__(self, batch: list[Frame]) -> list[np.ndarray]:
        x = torch.from_numpy(np.stack([f.input for f in batch])).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            inputs, picked = self.pipeline.translate(x)
            logits = self.pipeline.segmenter(inputs)
        overlays = []
        for i, f in enumerate(batch):
            size = f.frame.shape[:2]
            # Back to the frame's own size: logits bilinearly (then argmax), not the class ids.
            lg = logits[i:i + 1].float()
            if tuple(lg.shape[-2:]) != size:
                lg = F.interpolate(lg, size=size, mode="bilinear", align_corners=False)
            confidence = None
            if getattr(self.writer, "needs_confidence", False):  # a submission's confidence maps
                conf, idx = lg.softmax(1).max(1)
                pred, confidence = idx[0].byte().cpu().numpy(), conf[0].cpu().numpy()
            else:
                pred = lg.argmax(1)[0].byte().cpu().numpy()
            translated = None
            if picked is not None and bool(picked[i]):
                t = inputs[i:i + 1].float()
                if tuple(t.shape[-2:]) != size:
                    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                translated = t[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
            if confidence is None:
                overlays.append(self.writer.write(f, pred, translated))
            else:
                overlays.append(self.writer.write(f, pred, translated, confidence=confidence))
        return overlays
