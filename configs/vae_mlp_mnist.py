"""The MLP VAE (Kingma & Welling 2013) on the embedded MNIST digits, dynamically binarised.

python train.py --config configs/vae_mlp_mnist.py --workdir runs/vae_mlp_mnist
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "vae_mlp"
    c.model.z_dim = 20
    c.model.hidden = 512
    c.model.depth = 1
    c.data.train = "mnist5k"
    c.vae.likelihood = "bernoulli"
    c.vae.binarize = True
    c.batch_size = 128
    c.optim.lr = 1e-3
    c.optim.b1 = 0.9
    c.num_steps = 5000
    c.steps_per_call = 10
    c.log_every = 100
    c.sample_every = 1000
    c.checkpoint_every = 1000
    return c
