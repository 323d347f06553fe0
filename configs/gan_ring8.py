"""A GAN on PacGAN's ring of 8 Gaussians (2-D, sigma 0.01 on the unit circle).

python train.py --config configs/gan_ring8.py --workdir runs/gan_ring8
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "toy_mlp"
    c.model.z_dim = 2
    c.model.hidden = 128
    c.model.depth = 2
    c.data.train = "ring8"
    c.batch_size = 256
    c.optim.lr = 1e-3
    c.optim.b1 = 0.5
    c.num_steps = 5000
    c.steps_per_call = 50
    c.log_every = 500
    c.sample_every = 1000
    c.checkpoint_every = 1000
    c.num_samples = 2500
    return c
