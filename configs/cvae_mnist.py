"""A class-conditional MLP VAE (Sohn et al. 2015) on the embedded MNIST digits: one-hot labels
into the encoder and the decoder; otherwise vae_mlp_mnist. Its samples of chosen classes are
an augmentation set (sample.py --mode dataset) that `mix:` adds to the real training data.

python train.py --config configs/cvae_mnist.py --workdir runs/cvae_mnist
python sample.py --workdir runs/cvae_mnist --mode dataset --num 5000 --out aug.npz
python train.py --config configs/cvae_mnist.py --workdir runs/cvae_mix \\
    --config.data.train=mix:mnist5k+npz:aug.npz
"""

from configs import vae_mlp_mnist


def get_config():
    c = vae_mlp_mnist.get_config()
    c.model.name = "cvae_mlp"
    return c
