"""A convolutional VAE on the embedded MNIST digits, dynamically binarised.

python train.py --config configs/vae_conv_mnist.py --workdir runs/vae_conv_mnist

The MLP VAE's data, likelihood and optimiser (configs/vae_mlp_mnist.py) with the
convolutional encoder and decoder, one step per compiled call.
"""

from configs import vae_mlp_mnist


def get_config():
    c = vae_mlp_mnist.get_config()
    c.model.name = "vae_conv"
    c.model.hidden = None  # the MLP's fields, which vae_conv does not read
    c.model.depth = None
    c.model.features = 32
    c.num_steps = 3000
    c.steps_per_call = 1
    return c
