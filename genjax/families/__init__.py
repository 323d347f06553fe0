"""Families of generative models, each one object implementing `Family` (families/base.py).

The registry (genjax.models.registry) maps each model name to its family; `FAMILIES` lists
every family by its config namespace, so that the config knows each namespace's fields.
"""

from genjax.families.base import Family
from genjax.families.gan import GAN, GANFamily, GANState
from genjax.families.vae import VAE, VAEFamily, VAEState

FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Adds a family under its name, which is also its config namespace `config.<name>`."""
    FAMILIES[family.name] = family
    return family


register_family(GAN)
register_family(VAE)

__all__ = [
    "FAMILIES",
    "GAN",
    "VAE",
    "Family",
    "GANFamily",
    "GANState",
    "VAEFamily",
    "VAEState",
    "register_family",
]
