"""Families of generative models, each one object implementing `Family` (families/base.py).

The registry (genjax.models.registry) maps each model name to its family; `FAMILIES` lists
every family by its config namespace, so that the config knows each namespace's fields.
"""

from genjax.families.base import Family
from genjax.families.gan import GAN, GANFamily, GANState
from genjax.families.text import LM, TEXT_VAE
from genjax.families.vae import VAE, VAEFamily, VAEState
from genjax.families.vqvae import VQ_PRIOR, VQVAE

FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Adds a family under its name, which is also its config namespace `config.<name>`."""
    FAMILIES[family.name] = family
    return family


register_family(GAN)
register_family(VAE)
register_family(TEXT_VAE)  # reads vae.* beside the image VAEs (its `namespace`)
register_family(LM)
register_family(VQVAE)
register_family(VQ_PRIOR)  # the autoregressive prior over a VQVAE's codes: prior.*

__all__ = [
    "FAMILIES",
    "GAN",
    "LM",
    "TEXT_VAE",
    "VAE",
    "Family",
    "GANFamily",
    "GANState",
    "VAEFamily",
    "VAEState",
    "VQ_PRIOR",
    "VQVAE",
    "register_family",
]
