"""An MLP VAE conditioned on the known pixels (masked_vae_mlp) on the embedded MNIST digits,
for inpainting: each training example gets a mask drawn from model.train_masks (nothing
known, a half, the centre square, or random pixels), and the model learns p(x_missing |
x_known); otherwise vae_mlp_mnist.

python train.py --config configs/masked_vae_mnist.py --workdir runs/masked_vae_mnist
python sample.py --workdir runs/masked_vae_mnist --mode inpaint --mask centre --out fills.png
"""

from configs import vae_mlp_mnist


def get_config():
    c = vae_mlp_mnist.get_config()
    c.model.name = "masked_vae_mlp"
    return c
