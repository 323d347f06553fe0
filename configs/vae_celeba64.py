"""Conv VAE at 64x64x3 on faces, discretised logistic likelihood (bits/dim), for a GPU.

A convolutional VAE on CelebA faces; its test NLL in bits per dimension.

    python train.py --config configs/vae_celeba64.py --workdir runs/vae_celeba64

Data as configs/dcgan_celeba64.py: `tfds:celeb_a`, a 108x108 centre crop resized to 64x64,
streamed by the host pipeline. Model: the conv VAE (two stride-2 convs of 64 and 128
features, a 128-d latent, the DCGAN-shaped decoder) whose decoder emits, per pixel and
colour, the location and log-scale of a logistic discretised to the 256 levels of 8-bit
colour (Salimans et al. 2017, PixelCNN++, eq. 2, one component; genjax.objectives). Unlike the
Gaussian density, it gives each image a probability, so -log p(x) / (64 * 64 * 3 * ln 2) is
bits per dimension, the unit of published likelihoods on faces and natural images:
`test_nll` and `test_neg_elbo` from `python -m genjax.evaluate` are nats per image, and
`test_bits_per_dim` is test_nll / (64 * 64 * 3 * ln 2) (genjax.metrics.nll.bits_per_dim). The
importance-sampled NLL uses 128 samples on the first 2,000 test faces (eval.nll_k,
eval.max_test) to bound its cost at this size.
"""

from configs.dcgan_celeba64 import celeba64_data
from genjax.config import base_config


def get_config():
    c = celeba64_data(base_config())
    c.model.name = "vae_conv"
    c.model.z_dim = 128
    c.model.features = 64
    c.vae.likelihood = "discretized_logistic"
    c.vae.binarize = False
    c.batch_size = 128
    c.optim.lr = 1e-3
    c.optim.b1 = 0.9
    c.optim.decay_from = 0.5
    c.num_steps = 20000
    c.log_every = 100
    c.sample_every = 2000
    c.checkpoint_every = 2000
    c.eval.nll_k = 128
    c.eval.max_test = 2000
    return c
