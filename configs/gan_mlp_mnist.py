"""The original MLP GAN (Goodfellow et al. 2014) on the embedded MNIST digits.

python train.py --config configs/gan_mlp_mnist.py --workdir runs/gan_mlp_mnist
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "gan_mlp"
    c.model.z_dim = 100
    c.model.hidden = 128
    c.data.train = "mnist5k"
    c.batch_size = 64
    c.optim.lr = 2e-4
    c.optim.b1 = 0.5
    c.num_steps = 20000
    c.steps_per_call = 20
    c.log_every = 500
    c.sample_every = 2000
    c.checkpoint_every = 2000
    return c
