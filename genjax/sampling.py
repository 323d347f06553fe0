"""sample.py's job, image grids and scatter plots.

What a model draws (samples, interpolations, reconstructions) is asked of its experiment
(genjax.experiment.Experiment), which asks the family and turns the result into data space;
how it is drawn is asked of the data kind.
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


def write_samples(workdir, out, num: int = 64, seed: int = 0, mode: str = "samples"):
    """sample.py: draws from a workdir's newest checkpoint into a .png picture or an .npz."""
    from pathlib import Path

    from genjax.config import ConfigError
    from genjax.experiment import restore

    out = Path(out)
    if out.suffix not in (".png", ".npz"):
        raise ConfigError(f"--out {out}: unknown file type {out.suffix!r}; valid: .png, .npz")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: no such directory {out.parent}")
    run = restore(workdir)
    exp, state = run.experiment, run.state
    if mode not in exp.modes:
        raise ConfigError(
            f"--mode {mode} does not apply to this model and data ({exp.config.model.name} on "
            f"{exp.kind.name} data); valid: {', '.join(sorted(exp.modes))}"
        )
    key = jax.random.PRNGKey(seed)
    columns = None
    if mode in ("samples", "scatter"):
        x = jax.jit(partial(exp.sample, num=num))(state, key)
    elif mode == "interpolate":
        rows, columns = -(-num // 8), 8  # whole rows of 8: at least num images
        x = exp.interpolate(state, key, rows, columns)
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
        np.savez(out, samples=exp.kind.stored(x))
    else:
        exp.kind.picture(x, run.test_source, columns).save(out)
    return out
