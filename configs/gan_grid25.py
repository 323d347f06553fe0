"""A GAN on PacGAN's grid of 25 Gaussians (2-D, means {-4,-2,0,2,4}^2, sigma 0.05).

python train.py --config configs/gan_grid25.py --workdir runs/gan_grid25
"""

from configs import gan_ring8


def get_config():
    c = gan_ring8.get_config()
    c.data.train = "grid25"
    c.num_steps = 10000
    return c
