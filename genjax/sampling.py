"""sample.py's job, image grids and scatter plots.

What a model draws (samples, interpolations, reconstructions, inpaintings, data sets) is
asked of its experiment (genjax.experiment.Experiment), which asks the family and turns the
result into data space; how it is drawn is asked of the data kind.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw


def to_uint8(images) -> np.ndarray:
    """Images in [0, 1] -> uint8."""
    return np.asarray(jnp.round(jnp.clip(images, 0.0, 1.0) * 255.0), dtype=np.uint8)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> Image.Image:
    """A grid picture of uint8 NHWC images (grey or RGB)."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, q = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top : top + h, left : left + w] = image
    return Image.fromarray(grid[..., 0] if c == 1 else grid)


def scatter_plot(
    points: np.ndarray, real: np.ndarray | None = None, size: int = 512
) -> Image.Image:
    """Generated 2-D points (blue) over real data (grey), on a square canvas."""
    points = np.asarray(points, np.float64)
    both = points if real is None else np.concatenate([points, real])
    both = both[np.isfinite(both).all(axis=1)]
    lo, hi = (both.min(), both.max()) if len(both) else (-1.0, 1.0)
    margin = 0.05 * (hi - lo) + 1e-6
    lo, hi = lo - margin, hi + margin

    def pixels(p):
        p = p[np.isfinite(p).all(axis=1)]
        return (p - lo) / (hi - lo) * (size - 1)

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for layer, colour in ((real, (190, 190, 190)), (points, (31, 119, 180))):
        if layer is None:
            continue
        for x, y in pixels(np.asarray(layer, np.float64)):
            draw.ellipse((x - 1.5, size - 1 - y - 1.5, x + 1.5, size - 1 - y + 1.5), fill=colour)
    return image


def write_samples(
    workdir,
    out,
    num: int = 64,
    seed: int = 0,
    mode: str = "samples",
    label: int | None = None,
    temperature: float | None = None,
    sentences: str | None = None,
    inputs: str | None = None,
    mask: str | None = None,
    num_fills: int = 1,
):
    """sample.py: draws from a workdir's newest checkpoint into a .png picture or an .npz;
    a model of token data also into a .txt (genjax.text_sampling, which reads `temperature`
    and `sentences`).

    A class-conditional model draws class `label`, or by default every class in turn (equal
    blocks, in order); its .npz also holds the `labels` of the samples. Interpolations keep
    one class per row. Mode 'inpaint' fills the `mask`ed pixels of the first `num` examples
    of the data source `inputs` (default: the training source's test split), `num_fills`
    times each (write_inpainting); mode 'dataset' writes `num` samples as an npz: data set
    (write_dataset). Every check runs before anything is written."""
    from pathlib import Path

    from genjax.config import ConfigError
    from genjax.experiment import restore

    out = Path(out)
    if out.suffix == ".txt" or temperature is not None or sentences:
        from genjax.text_sampling import write_text

        if label is not None:
            raise ConfigError(f"--class {label} applies to class-conditional models; leave it out")
        return write_text(workdir, out, num, seed, mode, temperature, sentences)
    if out.suffix not in (".png", ".npz"):
        raise ConfigError(
            f"--out {out}: unknown file type {out.suffix!r}; valid: .png, .npz, .txt (text)"
        )
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: no such directory {out.parent}")
    check_mode_flags(mode, out, inputs, mask, num_fills)
    run = restore(workdir)
    exp, state = run.experiment, run.state
    if mode in SPECIAL_MODES and mode not in exp.modes:
        raise ConfigError(SPECIAL_MODES[mode](exp))
    if mode not in exp.modes:
        raise ConfigError(
            f"--mode {mode} does not apply to this model and data ({exp.config.model.name} on "
            f"{exp.kind.name} data); valid: {', '.join(sorted(exp.modes))}"
        )
    check_label(exp, label, mode)
    key = jax.random.PRNGKey(seed)
    if mode == "inpaint":
        source = run.test_source if inputs is None else open_inputs(exp, inputs)
        return write_inpainting(exp, state, source, out, num, seed, mask, num_fills, label)
    if mode == "dataset":
        return write_dataset(exp, state, out, num, seed, label)
    columns, labels = None, None
    if mode in ("samples", "scatter"):
        labels = exp.sample_labels(num, label)
        x = jax.jit(partial(exp.sample, num=num))(state, key, labels=labels)
    elif mode == "interpolate":
        rows, columns = -(-num // 8), 8  # whole rows of 8: at least num images
        row_labels = exp.sample_labels(rows, label)
        x = exp.interpolate(state, key, rows, columns, labels=row_labels)
        if row_labels is not None:
            labels = jnp.repeat(row_labels, columns)
    else:  # reconstruct: pairs (test example, its reconstruction), interleaved
        batch = {k: v[:num] for k, v in run.test_source.to_arrays().items()}
        recon = exp.reconstruct(state, batch)
        real = exp.kind.from_model(
            exp.kind.model_input(batch, exp.family.value_range), exp.family.value_range
        )
        x = jnp.stack([real, recon], axis=1).reshape(-1, *recon.shape[1:])
        columns = 2 * min(8, len(recon))
    x = np.asarray(x)
    if out.suffix == ".npz":
        extra = {} if labels is None else {"labels": np.asarray(labels, np.int32)}
        np.savez(out, samples=exp.kind.stored(x), **extra)
    else:
        exp.kind.picture(x, run.test_source, columns).save(out)
    return out


def check_label(experiment, label: int | None, mode: str) -> None:
    """ConfigError unless `label` (sample.py's --class) is None or a class of a
    class-conditional model, in a mode that draws from the model."""
    from genjax.config import ConfigError

    if label is None:
        return
    n = experiment.num_classes
    if not n:
        raise ConfigError(
            f"--class {label}: model {experiment.config.model.name!r} is not class-conditional "
            "(e.g. cdcgan is); leave --class out"
        )
    if not 0 <= label < n:
        raise ConfigError(f"--class {label} is not a class of this model; valid: 0 to {n - 1}")
    if mode == "reconstruct":
        raise ConfigError(
            "--class does not apply to --mode reconstruct; valid: samples, interpolate"
        )


# --------------------------------------------------------------- inpaint and dataset


def _inpainting_models() -> str:
    """The registered models whose family can inpaint and that take images (each built, not
    initialised, with its defaults for 32 x 32 x 3 images of 10 classes)."""
    from genjax.config import ConfigError, base_config, resolve
    from genjax.models import registry

    names = []
    for name, entry in sorted(registry.MODELS.items()):
        if "inpaint" not in entry.family.modes:
            continue
        c = base_config()
        c.model.name = name
        try:
            registry.build(resolve(c), (32, 32, 3), num_classes=10)
        except ConfigError:
            continue
        names.append(name)
    return ", ".join(names)


# mode -> the one-line reason it does not apply to an experiment
SPECIAL_MODES = {
    "inpaint": lambda exp: (
        f"--mode inpaint does not apply to model {exp.config.model.name!r} on "
        f"{exp.kind.name} data {exp.data_shape}; models that can inpaint images: "
        f"{_inpainting_models()}"
    ),
    "dataset": lambda exp: (
        f"--mode dataset writes images for the npz: source; model {exp.config.model.name!r} "
        f"draws {exp.kind.name} data {exp.data_shape}; valid modes for it: "
        f"{', '.join(sorted(exp.modes))}"
    ),
}


def check_mode_flags(mode: str, out, inputs, mask, num_fills: int) -> None:
    """ConfigError for a flag that its mode does not read, a mask that does not parse, or
    an output file the mode cannot write."""
    from genjax.config import ConfigError
    from genjax.inpaint import VALID_MASKS, parse_mask

    if mode != "inpaint":
        for flag, value in (("--inputs", inputs), ("--mask", mask)):
            if value is not None:
                raise ConfigError(f"{flag} applies to --mode inpaint; leave it out")
        if num_fills != 1:
            raise ConfigError("--num_fills applies to --mode inpaint; leave it out")
    else:
        if mask is None:
            raise ConfigError(f"--mode inpaint needs --mask; valid: {VALID_MASKS}")
        parse_mask(mask)
        if num_fills < 1:
            raise ConfigError(f"--num_fills must be >= 1, got {num_fills}")
    if mode == "dataset" and out.suffix != ".npz":
        raise ConfigError(
            f"--mode dataset writes an .npz (images, labels) for the npz: source; --out {out} "
            "is not one: give --out FILE.npz"
        )


def open_inputs(experiment, spec: str):
    """The examples to inpaint: the data source `spec`'s test split, or all of it if it has
    none, resized as the model's training data was; ConfigError unless its examples have the
    model's kind and shape."""
    from genjax.config import ConfigError
    from genjax.data.sources import open_source

    data = experiment.config.data
    splits = open_source(
        spec, image_size=data.image_size, center_crop=data.center_crop, data_dir=data.data_dir
    )
    source = splits.select("test" if splits.has_test else "all")
    if (source.kind, tuple(source.shape)) != (experiment.kind.name, experiment.data_shape):
        raise ConfigError(
            f"--inputs {spec}: its examples are {source.kind} {tuple(source.shape)} but the "
            f"model was trained on {experiment.kind.name} {experiment.data_shape}; give inputs "
            "of that kind and shape"
        )
    return source


def inpaint_labels(experiment, batch: dict, label: int | None):
    """The classes a class-conditional model fills the inputs as: all `label` (--class), else
    the inputs' own labels; None for an unconditional model."""
    from genjax.config import ConfigError
    from genjax.data.kinds import LABEL

    n = experiment.num_classes
    if not n:
        return None
    count = len(batch[experiment.kind.keys[0]])
    if label is not None:
        return np.full(count, label, np.int32)
    if LABEL not in batch:
        raise ConfigError(
            f"model {experiment.config.model.name!r} is class-conditional and the inputs have "
            "no labels; give --class K or inputs with labels"
        )
    labels = np.asarray(batch[LABEL], np.int32)
    if labels.min() < 0 or labels.max() >= n:
        raise ConfigError(f"the inputs' labels are not classes of this model; valid: 0 to {n - 1}")
    return labels


def inpaint_arrays(experiment, state, batch: dict, masks, key, num_fills=1, labels=None):
    """(inputs, fills) as stored: the inputs (N, ...) and their fills (N, num_fills, ...),
    with every known pixel (masks (N, H, W, 1) = 1) exactly the input's."""
    kind = experiment.kind
    stored_inputs = kind.stored(kind.from_model(kind.model_input(batch, (0.0, 1.0)), (0.0, 1.0)))
    fills = experiment.inpaint(state, batch, masks, key, num_fills, labels)
    fills = np.asarray(kind.stored(np.asarray(fills)))
    known = np.asarray(masks)[:, None] > 0
    return stored_inputs, np.where(known, stored_inputs[:, None], fills)


def write_inpainting(experiment, state, source, out, num, seed, mask, num_fills, label):
    """The first `num` examples of `source` with `mask`'s pixels missing, filled `num_fills`
    times. .npz: `inputs` (N, H, W, C), `masks` (N, H, W, 1) uint8 1 = known, `samples`
    (N, num_fills, H, W, C) [+ `labels` (N,)]; .png: a row per input (the input with its
    missing pixels grey, its fills, the original)."""
    from genjax.inpaint import make_masks

    batch = source.take(np.arange(min(num, len(source))))
    labels = inpaint_labels(experiment, batch, label)
    masks = make_masks(mask, len(batch[experiment.kind.keys[0]]), experiment.data_shape, seed)
    inputs, samples = inpaint_arrays(
        experiment, state, batch, masks, jax.random.PRNGKey(seed), num_fills, labels
    )
    if out.suffix == ".npz":
        extra = {} if labels is None else {"labels": labels}
        np.savez(out, inputs=inputs, masks=masks.astype(np.uint8), samples=samples, **extra)
    else:
        shown = np.where(masks > 0, inputs, np.uint8(128))
        rows = np.concatenate([shown[:, None], samples, inputs[:, None]], axis=1)
        image_grid(rows.reshape(-1, *inputs.shape[1:]), columns=num_fills + 2).save(out)
    return out


def write_dataset(experiment, state, out, num, seed, label, batch: int = 500):
    """`num` samples as an npz: data set: `images` (N, H, W, C) uint8 and, for a
    class-conditional model, `labels` (N,): all `label`, else drawn uniformly (numpy seed
    `seed`). Drawn `batch` at a time by one compiled sampler."""
    labels = None
    if experiment.num_classes:
        rng = np.random.default_rng(seed)
        labels = (
            np.full(num, label, np.int32)
            if label is not None
            else rng.integers(0, experiment.num_classes, num).astype(np.int32)
        )
    size = min(num, batch)
    draw = jax.jit(partial(experiment.sample, num=size))
    calls = -(-num // size)
    padded = None if labels is None else np.resize(labels, calls * size).reshape(calls, size)
    key = jax.random.PRNGKey(seed)
    parts = [
        np.asarray(
            draw(state, jax.random.fold_in(key, i), labels=None if padded is None else padded[i])
        )
        for i in range(calls)
    ]
    images = experiment.kind.stored(np.concatenate(parts)[:num])
    np.savez(out, images=images, **({} if labels is None else {"labels": labels}))
    return out
