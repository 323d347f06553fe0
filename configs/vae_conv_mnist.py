"""A convolutional VAE on the embedded MNIST digits, dynamically binarised.

python train.py --config configs/vae_conv_mnist.py --workdir runs/vae_conv_mnist
"""

from configs import vae_mlp_mnist


def get_config():
    c = vae_mlp_mnist.get_config()
    c.model.name = "vae_conv"
    c.model.features = 32
    c.model.hidden = 256
    c.num_steps = 3000
    c.steps_per_call = 1
    return c
