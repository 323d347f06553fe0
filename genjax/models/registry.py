"""Config names -> model builders: a new model is one module and one line in `MODELS`.

Each entry holds the model's family (genjax.families), its builder, and the model.* config
fields it reads with their defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from genjax import inpaint
from genjax.config import ConfigError
from genjax.families import GAN, VAE, Family
from genjax.families.text import LM, TEXT_VAE
from genjax.families.vae import LIKELIHOOD_CHANNELS
from genjax.families.vqvae import VQ_PRIOR, VQVAE
from genjax.models import gan, resnet, text, vae, vqvae
from genjax.models.layers import square_levels


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


def _positive(model_config, *keys: str) -> None:
    """ConfigError unless each model.KEY is >= 1."""
    for key in keys:
        if model_config[key] < 1:
            raise ConfigError(f"config.model.{key} must be >= 1, got {model_config[key]}")


def _gan_mlp(config, shape, **common):
    cfg = config.model
    shape = _image_shape("gan_mlp", shape)
    _positive(cfg, "z_dim", "hidden")
    return (
        gan.MLPGenerator(shape, cfg.hidden, depth=1, negative_slope=0.01, squash=True, **common),
        gan.MLPDiscriminator(cfg.hidden, depth=1, negative_slope=0.01, **common),
    )


def _dcgan(config, shape, num_classes=0, **common):
    cfg = config.model
    shape = _square_image_shape(config.model.name, shape)
    _positive(cfg, "z_dim", "features")
    if cfg.d_norm not in ("batch", "layer", "spectral", "none"):
        raise ConfigError(
            f"config.model.d_norm={cfg.d_norm!r}; valid: batch, layer, spectral, none"
        )
    penalty = "gan.loss=wgan_gp" if config.gan.loss == "wgan_gp" else "gan.r1_weight > 0"
    if (config.gan.loss == "wgan_gp" or config.gan.r1_weight) and cfg.d_norm == "batch":
        raise ConfigError(
            f"{penalty} needs a discriminator without batch norm (the penalty is per "
            "example): set --config.model.d_norm=layer, spectral or none"
        )
    if num_classes and config.gan.pack > 1:
        raise ConfigError(
            f"config.gan.pack={config.gan.pack}: a class-conditional discriminator judges one "
            "example and its label at a time; set gan.pack=1"
        )
    return (
        gan.DCGANGenerator(shape, cfg.features, num_classes, **common),
        gan.DCGANDiscriminator(cfg.features, cfg.d_norm, num_classes, **common),
    )


def _sngan_resnet(config, shape, **common):
    cfg = config.model
    if len(shape) != 3 or shape[:2] != (32, 32):
        raise ConfigError(f"model 'sngan_resnet' takes 32 x 32 images (32, 32, C); got {shape}")
    _positive(cfg, "z_dim", "features", "d_features")
    return (
        resnet.SNGANGenerator32(shape, cfg.features, **common),
        resnet.SNGANDiscriminator32(cfg.d_features, **common),
    )


def _toy_mlp(config, shape, **common):
    cfg = config.model
    if len(shape) != 1:
        raise ConfigError(f"model 'toy_mlp' takes points (D,), e.g. (2,); got {shape}")
    _positive(cfg, "z_dim", "hidden", "depth")
    return (
        gan.MLPGenerator(shape, cfg.hidden, cfg.depth, negative_slope=0.0, squash=False, **common),
        gan.MLPDiscriminator(cfg.hidden, cfg.depth, negative_slope=0.2, **common),
    )


def _autoregressive(config, encoder, decoder, dtype):
    """(encoder, decoder), the decoder wrapped in an AutoregressiveDecoder when
    model.ar_kernel is set (a K x K causal window, PixelVAE-style)."""
    kernel = config.model.ar_kernel
    if not (kernel == 0 or (kernel >= 3 and kernel % 2 == 1)):
        raise ConfigError(
            f"config.model.ar_kernel={kernel}; valid: 0 (off) or an odd kernel size >= 3"
        )
    _positive(config.model, "ar_hidden")
    if not kernel:
        return encoder, decoder
    if config.vae.likelihood == "discretized_logistic":  # its sampler draws the other two
        raise ConfigError("config.model.ar_kernel: valid with vae.likelihood bernoulli, gaussian")
    return encoder, vae.AutoregressiveDecoder(decoder, kernel, config.model.ar_hidden, dtype=dtype)


def _vae_mlp(config, shape, **common):
    cfg = config.model
    shape = _image_shape("vae_mlp", shape)
    _positive(cfg, "z_dim", "hidden", "depth")
    k = LIKELIHOOD_CHANNELS[config.vae.likelihood]  # decoder channels per data channel
    return _autoregressive(
        config,
        vae.MLPEncoder(cfg.z_dim, cfg.hidden, cfg.depth, **common),
        vae.MLPDecoder(shape, k, cfg.hidden, cfg.depth, **common),
        common["dtype"],
    )


def _cvae_mlp(config, shape, num_classes=0, **common):
    cfg = config.model
    shape = _image_shape("cvae_mlp", shape)
    _positive(cfg, "z_dim", "hidden", "depth")
    k = LIKELIHOOD_CHANNELS[config.vae.likelihood]  # decoder channels per data channel
    return (
        vae.ConditionalMLPEncoder(
            cfg.z_dim, cfg.hidden, cfg.depth, num_classes=num_classes, **common
        ),
        vae.ConditionalMLPDecoder(
            shape, k, cfg.hidden, cfg.depth, num_classes=num_classes, **common
        ),
    )


def _masked_vae_mlp(config, shape, **common):
    cfg = config.model
    shape = _image_shape("masked_vae_mlp", shape)
    _positive(cfg, "z_dim", "hidden", "depth")
    specs = inpaint.parse_masks(cfg.train_masks, "config.model.train_masks")
    if inpaint.MaskSpec("all") not in specs:
        raise ConfigError(
            f"config.model.train_masks={cfg.train_masks!r} must include 'all' (nothing known: "
            "the unconditional model that sampling and test_nll use)"
        )
    if config.vae.objective != "elbo":
        raise ConfigError("model masked_vae_mlp trains on the ELBO: set vae.objective=elbo")
    k = LIKELIHOOD_CHANNELS[config.vae.likelihood]  # decoder channels per data channel
    return (
        vae.MaskedMLPEncoder(
            cfg.z_dim, cfg.hidden, cfg.depth, data_shape=shape, train_masks=specs, **common
        ),
        vae.MaskedMLPDecoder(shape, k, cfg.hidden, cfg.depth, **common),
    )


def _vae_conv(config, shape, **common):
    cfg = config.model
    shape = _square_image_shape("vae_conv", shape)
    _positive(cfg, "z_dim", "features")
    k = LIKELIHOOD_CHANNELS[config.vae.likelihood]  # decoder channels per data channel
    return _autoregressive(
        config,
        vae.ConvEncoder(cfg.z_dim, cfg.features, **common),
        vae.ConvDecoder(shape, k, cfg.features, **common),
        common["dtype"],
    )


class Entry(NamedTuple):
    """A registered model: its family, its builder, and the model.* fields it reads with
    their defaults (a model.* field it does not read is a ConfigError when set).

    A `conditional` model is class-conditional: its builder also takes `num_classes`, the
    training data's number of classes, and it refuses data without labels."""

    family: Family
    builder: Callable[..., tuple[nn.Module, nn.Module]]
    defaults: dict[str, Any]
    conditional: bool = False


MASKED_TRAINING = "all,bottom,top,left,right,centre,random:0.5"  # masked_vae_mlp's train_masks
# Keep the defaults of a field the same across models: base_config() types each field once.
_AUTOREGRESSIVE = {"ar_kernel": 0, "ar_hidden": 32}  # VAE decoders; 0 = a plain decoder
MODELS: dict[str, Entry] = {
    # Goodfellow et al. 2014: one hidden layer of `hidden` units in G and D
    "gan_mlp": Entry(GAN, _gan_mlp, {"z_dim": 2, "hidden": 128}),
    # Radford et al. 2016; d_norm: D's normalisation, batch | layer | spectral | none
    "dcgan": Entry(GAN, _dcgan, {"z_dim": 2, "features": 64, "d_norm": "batch"}),
    # class-conditional DCGAN: conditional BatchNorm in G, projection D (Miyato & Koyama 2018)
    "cdcgan": Entry(GAN, _dcgan, {"z_dim": 2, "features": 64, "d_norm": "batch"}, True),
    # Miyato et al. 2018, ResNet G and spectrally normalised D for 32 x 32, as in Mimicry
    "sngan_resnet": Entry(GAN, _sngan_resnet, {"z_dim": 128, "features": 256, "d_features": 128}),
    # 2-D mixtures (ring8, grid25)
    "toy_mlp": Entry(GAN, _toy_mlp, {"z_dim": 2, "hidden": 128, "depth": 2}),
    # Kingma & Welling 2013
    "vae_mlp": Entry(VAE, _vae_mlp, {"z_dim": 2, "hidden": 128, "depth": 2, **_AUTOREGRESSIVE}),
    "vae_conv": Entry(VAE, _vae_conv, {"z_dim": 2, "features": 64, **_AUTOREGRESSIVE}),
    # class-conditional MLP VAE (Sohn et al. 2015): one-hot labels into encoder and decoder
    "cvae_mlp": Entry(VAE, _cvae_mlp, {"z_dim": 2, "hidden": 128, "depth": 2}, True),
    # an MLP VAE conditioned on the known pixels and their mask, trained on masks drawn from
    # train_masks (a CVAE whose condition is the known pixels, as VAEAC: Ivanov et al. 2019)
    "masked_vae_mlp": Entry(
        VAE,
        _masked_vae_mlp,
        {"z_dim": 2, "hidden": 128, "depth": 2, "train_masks": MASKED_TRAINING},
    ),
    # Bowman et al. 2016: GRU encoder and decoder over tokens; text_lm is the decoder without z
    "text_vae": Entry(TEXT_VAE, text.build_vae, {"z_dim": 32, "hidden": 256, "embed_dim": 128}),
    "text_lm": Entry(LM, text.build_lm, {"hidden": 256, "embed_dim": 128}),
    # van den Oord et al. 2017: conv encoder and decoder around a codebook (vqvae.*); z_dim is
    # a code vector's size
    "vqvae_conv": Entry(VQVAE, vqvae.build_vqvae, {"z_dim": 16, "features": 32}),
    # a causal transformer over a frozen vqvae_conv's codes (prior.vqvae_workdir)
    "vq_prior": Entry(VQ_PRIOR, vqvae.build_prior, {"hidden": 128, "depth": 2}),
}


def register_model(
    name: str, family: Family, builder: Callable, defaults: dict, conditional: bool = False
) -> None:
    """Adds a model: `builder(config, data_shape, dtype=..., axis_name=...)` returns the
    family's modules from the resolved config; `defaults` are the model.* fields it reads.
    A `conditional` model's builder also gets `num_classes=` (the data's classes)."""
    MODELS[name] = Entry(family, builder, dict(defaults), conditional)


def entry(name: str) -> Entry:
    """The registry entry of a model name; ConfigError naming the valid ones otherwise."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def family_of(name: str) -> Family:
    """The family of a registered model name; ConfigError naming the valid ones otherwise."""
    return entry(name).family


def build(
    config,
    data_shape: tuple,
    *,
    num_classes: int = 0,
    dtype: Any = jnp.float32,
    axis_name: str | None = None,
) -> tuple[nn.Module, nn.Module]:
    """The family's modules ((generator, discriminator) for a GAN, (encoder, decoder) for a
    VAE) from a resolved config (genjax.config.resolve); `dtype` (a dtype or its name) is the
    compute dtype, params stay float32. `num_classes` is the data's number of classes (0: no
    labels), which a conditional model needs and the others ignore."""
    shape = tuple(int(d) for d in data_shape)
    name = config.model.name
    model = entry(name)
    common = {"dtype": jnp.dtype(dtype), "axis_name": axis_name}
    if not model.conditional:
        return model.builder(config, shape, **common)
    if num_classes < 2:
        unconditional = sorted(n for n, e in MODELS.items() if e.family is model.family)
        unconditional = [n for n in unconditional if not MODELS[n].conditional]
        raise ConfigError(
            f"model {name!r} is class-conditional and data {config.data.train!r} has no class "
            f"labels; use labelled data (e.g. mnist5k, tfds:cifar10) or a model without "
            f"classes ({', '.join(unconditional)})"
        )
    return model.builder(config, shape, num_classes=num_classes, **common)
