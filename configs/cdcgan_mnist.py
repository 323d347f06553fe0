"""Class-conditional DCGAN on the embedded MNIST digits (28x28x1): conditional BatchNorm in
the generator, a projection discriminator (Miyato & Koyama 2018); otherwise dcgan_mnist.

python train.py --config configs/cdcgan_mnist.py --workdir runs/cdcgan_mnist
python sample.py --workdir runs/cdcgan_mnist --out sevens.png --class 7
"""

from configs import dcgan_mnist


def get_config():
    c = dcgan_mnist.get_config()
    c.model.name = "cdcgan"
    return c
