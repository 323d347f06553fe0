"""Where training reports go: metrics.jsonl, TensorBoard event files, sample pictures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


class MetricWriter:
    """Appends one JSON object per log step to metrics.jsonl and mirrors it to TensorBoard."""

    def __init__(self, workdir: str | Path):
        from tensorboardX import SummaryWriter

        self.workdir = Path(workdir)
        self.jsonl = open(self.workdir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
        self.tensorboard = SummaryWriter(logdir=str(self.workdir / "tensorboard"))

    def scalars(self, step: int, values: dict) -> None:
        row = {"step": int(step)} | {k: float(v) for k, v in values.items()}
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            self.tensorboard.add_scalar(name, float(value), int(step))

    def picture(self, step: int, image: Image.Image) -> Path:
        """Saves samples/step_XXXXXXXX.png and logs it to TensorBoard."""
        path = self.workdir / "samples" / f"step_{int(step):08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        array = np.asarray(image.convert("RGB"))
        self.tensorboard.add_image("samples", array, int(step), dataformats="HWC")
        return path

    def close(self) -> None:
        self.jsonl.close()
        self.tensorboard.close()
