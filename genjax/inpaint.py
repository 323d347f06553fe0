"""Inpainting: masks, the two fill algorithms the families use, and the baselines they are
scored against (sample.py --mode inpaint, evaluate's `inpaint_mse`).

A mask is float32 (N, H, W, 1): 1 marks a known pixel, 0 a missing one (every channel of a
pixel together). Fills are computed at a family's value range; known pixels are always kept
exactly as they were given.

- VAEs: iterated posterior sampling (Rezende et al. 2014, appendix F): z ~ q(z|x), then the
  missing pixels ~ p(x|z), the known ones clamped, repeated (`pseudo_gibbs`); its fill x^
  then proposes latents z_k ~ q(z|x^), k = 1..K, one of which is drawn with probability
  proportional to p(x_known|z_k) p(z_k) / q(z_k|x^) (sampling importance resampling, as in
  Mattei & Frellsen 2019's imputation: `importance_resample`), so that the fill, the
  decoder's mean at that z, is scored by the known pixels alone rather than by where the
  chain stopped.
- VAEs trained on masks (`masked_vae_mlp`, conditioned on the known pixels: `known_pixels`,
  `sample_masks`): ancestral sampling, z ~ N(0, I), then the decoder's mean given z and the
  known pixels.
- GANs: latent optimisation (Yeh et al. 2017): z minimises a contextual loss, the L1 distance
  to the known pixels weighted by how many missing pixels surround each one, plus lambda
  times a prior loss, the GAN's own generator loss of D(G(z)) (`latent_optimisation`); the
  fill is G(z).
- Baselines, computed on the same masks: the mean training image, and the training image
  nearest to each input on its known pixels (`baseline_fills`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from genjax.config import ConfigError

MASKS = ("bottom", "top", "left", "right", "centre", "all")
VALID_MASKS = "bottom, top, left, right, centre, all, random:P (0 < P < 1)"

GIBBS_ITERATIONS = 100  # pseudo-Gibbs steps of a VAE's fill
IMPORTANCE_PROPOSALS = 256  # latents proposed per VAE fill, one resampled
LATENT_STEPS = 1000  # Adam steps on a GAN's latents (Yeh et al. 2017 use 1500)
LATENT_LR = 0.01
PRIOR_WEIGHT = 0.003  # lambda of the prior loss (Yeh et al. 2017, sec. 3.2)
CONTEXT_WINDOW = 7  # the neighbourhood of the contextual loss's weights (Yeh et al. 2017)


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """A parsed --mask: a half or the centre square missing, or each pixel with probability p."""

    name: str
    p: float = 0.0


def parse_mask(spec: str, flag: str = "--mask") -> MaskSpec:
    """The MaskSpec of `spec`; ConfigError naming `flag` and the valid specs for one that does
    not parse."""
    name, colon, arg = str(spec).partition(":")
    if not colon and name in MASKS:
        return MaskSpec(name)
    if colon and name == "random":
        try:
            p = float(arg)
        except ValueError:
            p = float("nan")
        if 0.0 < p < 1.0:
            return MaskSpec("random", p)
    raise ConfigError(f"{flag} {spec!r} is not a mask; valid: {VALID_MASKS}")


def make_masks(spec: str | MaskSpec, num: int, shape: tuple, seed: int = 0) -> np.ndarray:
    """`num` masks (num, H, W, 1) float32 for images of `shape` (H, W, C), 1 = known pixel.

    bottom / top: the last / first H // 2 rows missing; left / right: the first / last W // 2
    columns; centre: the centred (H // 2) x (W // 2) square; all: every pixel (the fill is then
    an unconditional sample); random:P: each pixel missing with probability P, independently
    per image (numpy seed `seed`)."""
    m = parse_mask(spec) if isinstance(spec, str) else spec
    if len(shape) != 3:
        raise ConfigError(f"--mask needs images (H, W, C); this data is {shape}")
    h, w = shape[0], shape[1]
    known = np.ones((num, h, w, 1), np.float32)
    hh, hw = h // 2, w // 2
    if m.name == "bottom":
        known[:, h - hh :] = 0
    elif m.name == "top":
        known[:, :hh] = 0
    elif m.name == "left":
        known[:, :, :hw] = 0
    elif m.name == "right":
        known[:, :, w - hw :] = 0
    elif m.name == "centre":
        top, left = (h - hh) // 2, (w - hw) // 2
        known[:, top : top + hh, left : left + hw] = 0
    elif m.name == "all":
        known[:] = 0
    else:
        rng = np.random.default_rng(seed)
        known[rng.random((num, h, w, 1)) < m.p] = 0
    return known


def parse_masks(text: str, flag: str) -> tuple[MaskSpec, ...]:
    """The MaskSpecs of a comma-separated list of mask specs (e.g. "all,bottom,random:0.5");
    ConfigError naming `flag` for an empty list or a spec that does not parse."""
    specs = tuple(parse_mask(part.strip(), flag) for part in str(text).split(",") if part.strip())
    if not specs:
        valid = f"a comma-separated list of {VALID_MASKS}"
        raise ConfigError(f"{flag}: no masks in {text!r}; valid: {valid}")
    return specs


def sample_masks(specs: tuple[MaskSpec, ...], shape: tuple, key, num: int) -> jax.Array:
    """`num` masks (num, H, W, 1) float32 for images of `shape`, each drawn from one of `specs`
    chosen uniformly per mask (in JAX, for training on masks): a fixed region as make_masks
    makes it, or for random:P each pixel missing with probability P."""
    fixed = jnp.asarray(np.concatenate([make_masks(s, 1, shape) for s in specs]))
    p = jnp.asarray([s.p for s in specs], jnp.float32)  # 0 for the fixed regions
    choice_key, pixel_key = jax.random.split(key)
    choice = jax.random.randint(choice_key, (num,), 0, len(specs))
    u = jax.random.uniform(pixel_key, (num, *shape[:2], 1))
    random_known = (u >= p[choice][:, None, None, None]).astype(jnp.float32)
    is_random = (p[choice] > 0)[:, None, None, None]
    return jnp.where(is_random, random_known, fixed[choice])


def known_pixels(x, mask):
    """What a model conditioned on the known pixels is given: [x * mask | mask], (B, H, W,
    C + 1), from images x (B, H, W, C) and masks (B, H, W, 1)."""
    return jnp.concatenate([x * mask, mask], axis=-1)


def keep_known(fill, x, mask):
    """The fill where pixels are missing and x where they are known."""
    return mask * x + (1 - mask) * fill


# ------------------------------------------------------------------------- algorithms


def pseudo_gibbs(
    posterior_sample: Callable,
    likelihood_draw: Callable,
    x,
    mask,
    key,
    iterations: int | None = None,
):
    """A VAE's fill by iterated posterior sampling (Rezende et al. 2014, appendix F).

    Missing pixels start at 0.5; each iteration draws z ~ q(z | x_t) (`posterior_sample(x,
    key)`), then x' ~ p(x | z) (`likelihood_draw(z, key)` -> (draw, mean)) and sets the missing
    pixels of x_{t+1} to x'. Returns the mean of p(x | z) at the last z, with known pixels
    kept. x (B, H, W, C) at the VAE's [0, 1], mask (B, H, W, 1); `iterations` default
    GIBBS_ITERATIONS."""
    iterations = GIBBS_ITERATIONS if iterations is None else iterations
    x0 = keep_known(jnp.full_like(x, 0.5), x, mask)

    def body(i, carry):
        current, _ = carry
        z_key, x_key = jax.random.split(jax.random.fold_in(key, i))
        draw, mean = likelihood_draw(posterior_sample(current, z_key), x_key)
        return keep_known(draw, x, mask), mean

    _, mean = lax.fori_loop(0, iterations, body, (x0, jnp.zeros_like(x)))
    return keep_known(mean, x, mask)


def importance_resample(propose: Callable, log_weight: Callable, key, num: int):
    """One z per example drawn from `num` proposals by their importance weights (sampling
    importance resampling), streamed: proposal k is z_k, log_q = propose(key_k) (z (B, D),
    log q(z_k) (B,)); its log weight is log_weight(z_k) - log_q; the draw keeps the proposal
    of largest log weight + Gumbel noise (the Gumbel-max trick: an exact categorical draw),
    so memory does not grow with `num`. Returns z (B, D)."""

    def body(k, carry):
        best_z, best_score = carry
        proposal_key, gumbel_key = jax.random.split(jax.random.fold_in(key, k))
        z, log_q = propose(proposal_key)
        score = log_weight(z) - log_q + jax.random.gumbel(gumbel_key, log_q.shape)
        better = score > best_score
        return jnp.where(better[:, None], z, best_z), jnp.where(better, score, best_score)

    z_shape, log_q_shape = jax.eval_shape(propose, key)
    start = (jnp.zeros(z_shape.shape, z_shape.dtype), jnp.full(log_q_shape.shape, -jnp.inf))
    return lax.fori_loop(0, num, body, start)[0]


def context_weights(mask, window: int = CONTEXT_WINDOW):
    """Yeh et al. 2017, eq. 4: a known pixel's weight is the fraction of missing pixels in the
    window x window square around it (0 for missing pixels), so the known pixels next to the
    hole count most. mask (B, H, W, 1) -> (B, H, W, 1)."""
    missing = 1.0 - mask
    pad = window // 2
    counts = lax.reduce_window(
        jnp.pad(missing, ((0, 0), (pad, pad), (pad, pad), (0, 0))),
        0.0,
        lax.add,
        (1, window, window, 1),
        (1, 1, 1, 1),
        "VALID",
    )
    return mask * counts / (window * window)


def latent_optimisation(
    generate: Callable,
    prior_loss: Callable,
    x,
    mask,
    z0,
    *,
    steps: int | None = None,
    lr: float = LATENT_LR,
    prior_weight: float = PRIOR_WEIGHT,
):
    """The latents of a GAN's fill by latent optimisation (Yeh et al. 2017, eq. 3-5): Adam
    on each example's z, from z0, to minimise ||W * (G(z) - x)||_1 + prior_weight *
    prior_loss(G(z)), W the context weights (`context_weights`); the fill is G(z) with the
    known pixels kept.

    generate(z) -> images (B, ...); prior_loss(images) -> (B,) per-example losses. Each
    example's loss depends on its own z alone, so one summed loss optimises all of them.
    `steps` default LATENT_STEPS."""
    steps = LATENT_STEPS if steps is None else steps
    weights = context_weights(mask)
    tx = optax.adam(lr)

    def loss(z):
        fake = generate(z)
        context = jnp.sum(jnp.abs(weights * (fake - x)), axis=tuple(range(1, x.ndim)))
        return jnp.sum(context + prior_weight * prior_loss(fake))

    def body(carry, _):
        z, opt_state = carry
        updates, opt_state = tx.update(jax.grad(loss)(z), opt_state, z)
        return (optax.apply_updates(z, updates), opt_state), None

    (z, _), _ = lax.scan(body, (z0, tx.init(z0)), None, length=steps)
    return z


# -------------------------------------------------------------------------- baselines


def masked_mse(fills, x, mask) -> float:
    """The mean squared error over the missing pixels (every channel) of fills against x,
    both (N, H, W, C) in [0, 1]; mask (N, H, W, 1)."""
    fills, x, mask = (np.asarray(a, np.float64) for a in (fills, x, mask))
    missing = np.broadcast_to(1.0 - mask, x.shape)
    return float(np.sum(missing * np.square(fills - x)) / max(np.sum(missing), 1.0))


def nearest_indices(train, x, mask, chunk: int = 256) -> np.ndarray:
    """For each x, the index of the training image nearest on x's known pixels (squared
    distance over them); train (M, H, W, C), x (N, H, W, C), both [0, 1]; mask (N, H, W, 1)."""
    t = np.asarray(train, np.float32).reshape(len(train), -1)
    t_sq = np.square(t)
    out = []
    for start in range(0, len(x), chunk):
        xb = np.asarray(x[start : start + chunk], np.float32)
        mb = np.broadcast_to(np.asarray(mask[start : start + chunk], np.float32), xb.shape)
        xb, mb = xb.reshape(len(xb), -1), mb.reshape(len(xb), -1)
        # sum_d m (x - t)^2 = sum m x^2 - 2 (m x) . t + m . t^2
        d = np.sum(mb * xb * xb, 1)[:, None] - 2 * (mb * xb) @ t.T + mb @ t_sq.T
        out.append(np.argmin(d, axis=1))
    return np.concatenate(out)


def baseline_fills(train, x, mask) -> dict[str, np.ndarray]:
    """{'mean_image': the mean training image, 'nearest': the training image nearest on the
    known pixels}, each as a fill of x (N, H, W, C) with its known pixels kept; [0, 1]."""
    train = np.asarray(train, np.float32)
    mask = np.asarray(mask, np.float32)
    mean = np.broadcast_to(train.mean(axis=0), np.shape(x))
    nearest = train[nearest_indices(train, x, mask)]
    return {
        "mean_image": np.asarray(keep_known(mean, x, mask)),
        "nearest": np.asarray(keep_known(nearest, x, mask)),
    }
