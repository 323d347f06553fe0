"""Models: flax.linen generators, discriminators, encoders and decoders, and their registry."""

from genjax.models.registry import MODELS, build, family_of

__all__ = ["MODELS", "build", "family_of"]
