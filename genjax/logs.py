"""Where training reports go: metrics.jsonl, TensorBoard event files, sample pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image


def write_atomically(path: Path, text: str) -> None:
    """Replaces `path` with `text` all at once: a full disk leaves the old file as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(workdir: Path, needed_bytes: int) -> None:
    """ConfigError unless `workdir` (or the folder it will be made in) takes files and has
    room for `needed_bytes`; writes nothing that stays."""
    import shutil
    import tempfile

    from genjax.config import ConfigError

    existing = workdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"workdir {workdir}: {existing} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"workdir {workdir} is not writable ({e.strerror})") from None
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise ConfigError(
            f"workdir {workdir}: only {free / 2**20:.1f} MB free on its file system, this run "
            f"needs about {needed_bytes / 2**20:.1f} MB (checkpoints and logs); free some "
            "space, lower config.keep_checkpoints, or use another --workdir"
        )


class MetricWriter:
    """Appends one JSON object per log step to metrics.jsonl and mirrors it to TensorBoard."""

    def __init__(self, workdir: str | Path, resume_step: int = 0):
        """Appends to the workdir's logs; rows past `resume_step` (from a run that stopped
        after its last checkpoint) are dropped, since the resumed run logs those steps again;
        in eval.jsonl, rows of the evaluate CLI (which carry its settings) are kept."""
        SummaryWriter = _summary_writer_class()  # noqa: N806 - a class

        self.workdir = Path(workdir)
        path = self.workdir / "metrics.jsonl"
        _drop_rows_after(path, resume_step)
        _drop_rows_after(self.workdir / "eval.jsonl", resume_step, keep=_from_evaluate_cli)
        self.jsonl = open(path, "a")  # noqa: SIM115 - closed in close()
        self.tensorboard = SummaryWriter(
            logdir=str(self.workdir / "tensorboard"), purge_step=resume_step + 1
        )

    def scalars(self, step: int, values: dict) -> None:
        """Appends {'step', values...} to metrics.jsonl (NaN as null) and logs the scalars."""
        self.jsonl.write(_json_row(step, values) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            self.tensorboard.add_scalar(name, float(value), int(step))

    def evaluation(self, step: int, values: dict) -> None:
        """Appends {'step', metrics...} to eval.jsonl (NaN as null) and logs eval/* scalars."""
        with open(self.workdir / "eval.jsonl", "a") as f:
            f.write(_json_row(step, values) + "\n")
        for name, value in values.items():
            if np.isfinite(value):
                self.tensorboard.add_scalar(f"eval/{name}", float(value), int(step))

    def picture(self, step: int, image: Image.Image) -> Path:
        """Saves samples/step_XXXXXXXX.png and logs it to TensorBoard."""
        path = self.workdir / "samples" / f"step_{int(step):08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        array = np.asarray(image.convert("RGB"))
        self.tensorboard.add_image("samples", array, int(step), dataformats="HWC")
        if "text" in image.info:  # generated sentences (genjax.data.text.render)
            write_atomically(path.with_suffix(".txt"), image.info["text"] + "\n")
            self.tensorboard.add_text("samples", image.info["text"], int(step))
        return path

    def close(self) -> None:
        self.jsonl.close()
        self.tensorboard.close()


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch: tensorboardX imports torch when it
    is installed (only to accept torch tensors, which genjax never passes), which costs
    seconds at every CLI start. A None in sys.modules makes that import fail as if torch were
    absent; a torch already imported is left as it is."""
    import sys

    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide:
            del sys.modules["torch"]
    return SummaryWriter


def json_number(value):
    """`value`, or None for a float that is not finite: strict JSON has no literal for NaN and
    inf (json.dumps would write NaN and Infinity)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _json_row(step: int, values: dict) -> str:
    """One JSON object of `step` and the values as floats, NaN and inf as null."""
    return json.dumps({"step": int(step)} | {k: json_number(float(v)) for k, v in values.items()})


def _drop_rows_after(path: Path, step: int, keep=lambda row: False) -> None:
    """Rewrites the JSON-lines file without the rows past `step` (unless `keep(row)`)."""
    if not path.exists():
        return
    rows = path.read_text().splitlines(keepends=True)
    kept = [r for r in rows if r.strip() and (_step_of(r) <= step or keep(r))]
    if len(kept) != len(rows):
        write_atomically(path, "".join(kept))


def _from_evaluate_cli(row: str) -> bool:
    try:
        return "settings" in json.loads(row)
    except (ValueError, TypeError):
        return False


def _step_of(row: str) -> int:
    """The step of a metrics.jsonl row; a damaged row (a killed write) counts as past all."""
    try:
        return int(json.loads(row)["step"])
    except (ValueError, KeyError, TypeError):
        return 2**62
