"""A GAN on PacGAN's ring of 8 Gaussians (2-D, sigma 0.01 on the unit circle).

python train.py --config configs/gan_ring8.py --workdir runs/gan_ring8

MLPs of 2 x 256, 10,000 steps at Adam 1e-3 (b1 0.5), batch 256: all 8 modes and ~96-97%
high-quality samples in every seed of the quality tables (docs/metrics.md). The toy
protocol's sample quality (a sample within 3 sigma = 0.03 of a mode) needs the learning rate
annealed at the end: held constant (--config.optim.decay_from=1.0) 41-77% of samples are high
quality, hence the linear decay to 0 over the last half (`optim.decay_from = 0.5`). The
MLPs are 2 x 256 because 2 x 128 (--config.model.hidden=128) drops modes in some seeds.
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "toy_mlp"
    c.model.z_dim = 2
    c.model.hidden = 256
    c.model.depth = 2
    c.data.train = "ring8"
    c.batch_size = 256
    c.optim.lr = 1e-3
    c.optim.b1 = 0.5
    c.optim.decay_from = 0.5  # constant lr, then linearly to 0 over the last half
    c.num_steps = 10000
    c.steps_per_call = 50
    c.log_every = 500
    c.sample_every = 1000
    c.checkpoint_every = 1000
    c.num_samples = 2500
    return c
