"""A GAN on PacGAN's grid of 25 Gaussians (2-D, means {-4,-2,0,2,4}^2, sigma 0.05).

python train.py --config configs/gan_grid25.py --workdir runs/gan_grid25

3 x 256 MLPs, Adam 5e-4 (b1 0.5) decayed linearly to 0 over the last half (from gan_ring8),
batch 512, 20,000 steps. At 10,000 steps it kept all 25 modes but only ~89% of samples were
high quality (seeds 0 and 1); doubling the steps (the same decay over the last half) gave
25/25 and 95.8% on seed 0 (README's quality table has every seed). Sweeps on seed 0 at
10,000 steps, one run each, found that what sharpens samples sooner loses modes: d_lr 1e-3
gave 21 modes / 93%, depth 4 19 / 95%, z_dim 16 collapsed. PacGAN packing (gan.pack)
stalled the discriminator for thousands of steps here: pack 2 with d_lr 1e-3 24 / 75%
(20,000 steps: 24, 23, 25 modes at 93-94% over seeds 0-2), pack 4 23-24 modes at 5-8%.
"""

from configs import gan_ring8


def get_config():
    c = gan_ring8.get_config()
    c.data.train = "grid25"
    c.model.hidden = 256
    c.model.depth = 3
    c.optim.lr = 5e-4
    c.batch_size = 512
    c.num_steps = 20000
    return c
