"""DCGAN (Radford et al. 2016) on the embedded MNIST digits (28x28x1).

python train.py --config configs/dcgan_mnist.py --workdir runs/dcgan_mnist
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "dcgan"
    c.model.z_dim = 100
    c.model.features = 64
    c.data.train = "mnist5k"
    c.batch_size = 64
    c.optim.lr = 2e-4
    c.optim.b1 = 0.5
    c.num_steps = 2000
    c.log_every = 100
    c.sample_every = 500
    c.checkpoint_every = 500
    return c
