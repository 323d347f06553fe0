"""GRU language model: the text_vae decoder without z, its baseline.

The language-model baseline of configs/text_vae.py: the same GRU decoder without z, on
pydocs, trained the same way, so every text_vae figure has one beside it."""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "text_lm"
    c.model.hidden, c.model.embed_dim = 256, 128
    c.data.train = "pydocs"
    c.data.vocab_size, c.data.max_len = 3000, 32
    c.optim.lr, c.optim.b1, c.optim.decay_from = 1e-3, 0.9, 0.75
    c.batch_size, c.num_steps, c.steps_per_call = 32, 3000, 50
    c.log_every, c.sample_every, c.checkpoint_every = 250, 1000, 1000
    c.num_samples = 16
    c.eval.num_samples, c.eval.nll_k = 1000, 1000
    return c
