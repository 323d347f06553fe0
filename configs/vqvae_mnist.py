"""VQ-VAE (van den Oord et al. 2017): 7x7 codes of 64, EMA codebook, restarts, Bernoulli.

On the embedded MNIST digits.

python train.py --config configs/vqvae_mnist.py --workdir runs/vqvae_mnist

The first stage: a conv encoder to a 7x7 grid of 16-d vectors, each replaced by the nearest
of 64 codes (straight-through), a conv decoder to Bernoulli logits over dynamically binarised
digits. The codebook follows EMAs of its assigned vectors (decay 0.99, the paper's appendix
A.1) and a code unused for 50 steps restarts on an encoder vector of the batch (Jukebox's
random restarts). Samples drawn here decode uniform codes; the prior over the codes is the
second stage, configs/vqvae_prior_mnist.py, trained on this workdir.
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "vqvae_conv"
    c.model.z_dim = 16  # a code vector's dimension
    c.model.features = 32
    c.data.train = "mnist5k"
    c.vqvae.codebook_size = 64
    c.vqvae.commitment = 0.25
    c.vqvae.ema_decay = 0.99
    c.vqvae.restart_dead = 50
    c.vqvae.likelihood = "bernoulli"
    c.vqvae.binarize = True
    c.batch_size = 128
    c.optim.lr = 1e-3
    c.optim.b1 = 0.9
    c.optim.decay_from = 0.5
    c.num_steps = 3000
    c.steps_per_call = 10
    c.log_every = 100
    c.sample_every = 1000
    c.checkpoint_every = 1000
    return c
