"""Sequence VAE on first sentences of Wikipedia articles, for a GPU.

The seed's case for a GPU: the sequence VAE on Wikipedia, one example per article (its
first sentence, lowercased and split into words), 20,000-word vocabulary, streamed from the
host (the grain path). The data set must be prepared in data.data_dir first (TFDS's
wikipedia builder needs the network and Apache Beam); see docs/text.md.

python train.py --config configs/text_vae_wikipedia.py --workdir runs/text_vae_wikipedia \
    --config.data.data_dir=/data/tfds
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "text_vae"
    c.model.z_dim, c.model.hidden, c.model.embed_dim = 32, 512, 256
    c.data.train = "tfds:wikipedia/20230601.en:text"
    c.data.on_device = False
    c.data.num_workers = 4
    c.data.vocab_size, c.data.max_len = 20_000, 40
    c.vae.word_dropout = 0.2
    c.vae.kl_cycles = 4
    c.vae.free_bits = 0.25
    c.optim.lr, c.optim.b1, c.optim.decay_from = 1e-3, 0.9, 0.75
    c.batch_size, c.num_steps, c.steps_per_call = 128, 100_000, 100
    c.log_every, c.sample_every, c.checkpoint_every = 500, 5000, 5000
    c.num_samples = 32
    c.eval.num_samples, c.eval.nll_k, c.eval.max_test = 1000, 500, 2000
    return c
