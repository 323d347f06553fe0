"""A GAN on PacGAN's grid of 25 Gaussians (2-D, means {-4,-2,0,2,4}^2, sigma 0.05).

python train.py --config configs/gan_grid25.py --workdir runs/gan_grid25

The ring8 config's 128x2 MLPs capture ~18/25 modes here with ~20% high-quality samples
even with the learning-rate decay. 256x3 MLPs at Adam 5e-4 with that decay
(optim.decay_from = 0.5, inherited from gan_ring8): batch 256 gave 23/25 modes, 89% HQ;
batch 512 gave 25/25 modes (>= 54 HQ samples each), 89.5% HQ (seed 0 only). Not yet at
the PacGAN target (all 25 in every seed, >= 95% HQ).
"""

from configs import gan_ring8


def get_config():
    c = gan_ring8.get_config()
    c.data.train = "grid25"
    c.model.hidden = 256
    c.model.depth = 3
    c.optim.lr = 5e-4
    c.batch_size = 512
    c.num_steps = 10000
    return c
