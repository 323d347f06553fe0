"""genjax: GANs and VAEs as pure functions and compiled, data-parallel train steps."""
