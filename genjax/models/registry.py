"""Config names -> model builders: a new model is one module and one line in `MODELS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from genjax.config import ConfigError
from genjax.models import gan, vae
from genjax.models.layers import square_levels

LIKELIHOOD_CHANNELS = {"bernoulli": 1, "gaussian": 2}  # decoder channels per data channel


def _image_shape(name: str, data_shape: tuple) -> tuple[int, int, int]:
    """data_shape as (H, W, C), or a ConfigError saying what `name` takes."""
    if len(data_shape) != 3:
        raise ConfigError(
            f"model {name!r} takes images (H, W, C), e.g. (28, 28, 1); got {data_shape}"
        )
    return data_shape


def _square_image_shape(name: str, data_shape: tuple) -> tuple[int, int, int]:
    """data_shape as a square (S, S, C), S = s0 * 2**n (s0 in 4..7, n >= 1), else ConfigError."""
    if len(data_shape) != 3 or data_shape[0] != data_shape[1] or not square_levels(data_shape[0]):
        raise ConfigError(
            f"model {name!r} takes square images (S, S, C) with S = s0 * 2**n, s0 in 4..7, n >= 1 "
            f"(e.g. 28, 32, 64); got {data_shape}"
        )
    return data_shape


def _gan_mlp(cfg, shape, k, **common):
    shape = _image_shape("gan_mlp", shape)
    return (
        gan.MLPGenerator(shape, cfg.hidden, depth=1, negative_slope=0.01, squash=True, **common),
        gan.MLPDiscriminator(cfg.hidden, depth=1, negative_slope=0.01, **common),
    )


def _dcgan(cfg, shape, k, **common):
    shape = _square_image_shape("dcgan", shape)
    if cfg.d_norm not in ("batch", "layer", "none"):
        raise ConfigError(f"config.model.d_norm={cfg.d_norm!r}; valid: batch, layer, none")
    return (
        gan.DCGANGenerator(shape, cfg.features, **common),
        gan.DCGANDiscriminator(cfg.features, cfg.d_norm, **common),
    )


def _toy_mlp(cfg, shape, k, **common):
    if len(shape) != 1:
        raise ConfigError(f"model 'toy_mlp' takes points (D,), e.g. (2,); got {shape}")
    return (
        gan.MLPGenerator(shape, cfg.hidden, cfg.depth, negative_slope=0.0, squash=False, **common),
        gan.MLPDiscriminator(cfg.hidden, cfg.depth, negative_slope=0.2, **common),
    )


def _vae_mlp(cfg, shape, k, **common):
    shape = _image_shape("vae_mlp", shape)
    return (
        vae.MLPEncoder(cfg.z_dim, cfg.hidden, cfg.depth, **common),
        vae.MLPDecoder(shape, k, cfg.hidden, cfg.depth, **common),
    )


def _vae_conv(cfg, shape, k, **common):
    shape = _square_image_shape("vae_conv", shape)
    return (
        vae.ConvEncoder(cfg.z_dim, cfg.features, **common),
        vae.ConvDecoder(shape, k, cfg.features, **common),
    )


class Entry(NamedTuple):
    """A registered model: its family ('gan' | 'vae') and its builder."""

    family: str
    builder: Callable[..., tuple[nn.Module, nn.Module]]


MODELS: dict[str, Entry] = {
    "gan_mlp": Entry("gan", _gan_mlp),  # Goodfellow et al. 2014
    "dcgan": Entry("gan", _dcgan),  # Radford et al. 2016
    "toy_mlp": Entry("gan", _toy_mlp),  # 2-D mixtures (ring8, grid25)
    "vae_mlp": Entry("vae", _vae_mlp),  # Kingma & Welling 2013
    "vae_conv": Entry("vae", _vae_conv),
}


def family_of(name: str) -> str:
    """'gan' or 'vae' for a registered model name; ConfigError naming the valid ones otherwise."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name].family


def build(
    model_config,
    data_shape: tuple,
    *,
    likelihood: str = "bernoulli",
    dtype: Any = jnp.float32,
    axis_name: str | None = None,
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for a GAN, (encoder, decoder) for a VAE, from config.model.

    `likelihood` sets the VAE decoder's channels per data channel (bernoulli 1, gaussian 2);
    `dtype` (a dtype or its name) is the compute dtype; params stay float32.
    """
    family_of(model_config.name)
    if likelihood not in LIKELIHOOD_CHANNELS:
        raise ConfigError(f"likelihood={likelihood!r}; valid: {', '.join(LIKELIHOOD_CHANNELS)}")
    shape = tuple(int(d) for d in data_shape)
    k = LIKELIHOOD_CHANNELS[likelihood]
    dtype = jnp.dtype(dtype)
    models = MODELS[model_config.name].builder(
        model_config, shape, k, dtype=dtype, axis_name=axis_name
    )
    kernel = model_config.ar_kernel
    if kernel:
        if family_of(model_config.name) != "vae":
            raise ConfigError(
                f"config.model.ar_kernel={kernel} is for VAE decoders; {model_config.name!r} "
                "is a GAN (set it to 0)"
            )
        encoder, decoder = models
        ar = vae.AutoregressiveDecoder(decoder, kernel, model_config.ar_hidden, dtype=dtype)
        models = (encoder, ar)
    return models
