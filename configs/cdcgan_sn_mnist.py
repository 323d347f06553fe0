"""The best GAN config on the embedded MNIST digits here: cdcgan_mnist with a spectrally
normalised projection discriminator (Miyato et al. 2018) instead of BatchNorm, the hinge loss,
and 4,000 steps (docs/metrics.md, quality_gan_best.md).

python train.py --config configs/cdcgan_sn_mnist.py --workdir runs/cdcgan_sn_mnist
python sample.py --workdir runs/cdcgan_sn_mnist --out digits.png --num 100
"""

from configs import cdcgan_mnist


def get_config():
    c = cdcgan_mnist.get_config()
    c.model.d_norm = "spectral"
    c.gan.loss = "hinge"
    c.num_steps = 4000
    return c
