"""Sequence VAE (Bowman et al. 2016): GRU encoder and decoder, cyclical KL, free bits.

On pydocs, the 11,954 sentences of CPython's documentation that ship with genjax: GRU
encoder and decoder, z (32) into the decoder's initial state and
every input, word dropout 0.2, KL warm-up, free bits and cyclical annealing against posterior
collapse. Its baseline is configs/text_lm.py, the same decoder without z."""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "text_vae"
    c.model.z_dim, c.model.hidden, c.model.embed_dim = 32, 256, 128
    c.data.train = "pydocs"
    c.data.vocab_size, c.data.max_len = 3000, 32
    c.vae.word_dropout = 0.2
    c.vae.kl_cycles = 4  # Fu et al. 2019: M = 4 cycles, R = 0.5
    c.vae.free_bits = 0.25  # nats per dimension, 8 nats over the 32 dimensions
    c.optim.lr, c.optim.b1, c.optim.decay_from = 1e-3, 0.9, 0.75
    c.batch_size, c.num_steps, c.steps_per_call = 32, 3000, 50
    c.log_every, c.sample_every, c.checkpoint_every = 250, 1000, 1000
    c.num_samples = 16
    c.eval.num_samples, c.eval.nll_k = 1000, 100
    return c
