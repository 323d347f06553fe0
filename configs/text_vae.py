"""Sequence VAE (Bowman et al. 2016): GRU encoder and decoder, cyclical KL, free bits.

On pydocs, the 11,954 sentences of CPython's documentation that ship with genjax: GRU
encoder and decoder, z (32) into the decoder's initial state and every input, free bits and
cyclical annealing against posterior collapse. Its baseline is configs/text_lm.py, the same
decoder without z.

Word dropout (Bowman et al. 2016 use it; `--config.vae.word_dropout=0.2`) and free bits of
0.25 nats per dimension both cost test NLL on this corpus without being needed against
collapse, so both are lower here: docs/quality_text_options.md measures each."""

from configs import text_lm


def get_config():
    c = text_lm.get_config()  # the same data, decoder, optimiser and schedule, plus z
    c.model.name = "text_vae"
    c.model.z_dim = 32
    c.vae.word_dropout = 0.0  # off (the field stays for Bowman et al.'s 0.2 or more)
    c.vae.kl_cycles = 4  # Fu et al. 2019: M = 4 cycles, R = 0.5
    c.vae.free_bits = 0.125  # nats per dimension, 4 nats over the 32 dimensions
    return c
