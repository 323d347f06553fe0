"""Causal transformer prior over the frozen 7x7 codes of a trained vqvae_mnist.

The VQ-VAE's second stage on the embedded MNIST digits; configs/vqvae_mnist.py stays frozen.

python train.py --config configs/vqvae_mnist.py --workdir runs/vqvae_mnist
python train.py --config configs/vqvae_prior_mnist.py --workdir runs/vqvae_prior_mnist \
    [--config.prior.vqvae_workdir=runs/vqvae_mnist]

Each step encodes a batch of digits (binarised afresh, as the first stage was trained) with
the frozen encoder and fits the prior to their codes by maximum likelihood: 2 pre-LayerNorm
blocks of width 64, 4 heads, 2,000 steps. Its workdir samples (codes in raster order,
decoded) and evaluates alone: the checkpoint holds the frozen first stage;
prior.vqvae_workdir is read for the first stage's config. `test_neg_elbo` = `test_recon` +
`test_code_nll` is the VQ-VAE's bound on -log p(x) in nats, comparable with the VAEs'
(docs/vqvae.md).
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "vq_prior"
    c.model.hidden = 64
    c.model.depth = 2
    c.data.train = "mnist5k"
    c.prior.vqvae_workdir = "runs/vqvae_mnist"
    c.batch_size = 128
    c.optim.lr = 1e-3
    c.optim.b1 = 0.9
    c.optim.decay_from = 0.5
    c.num_steps = 2000
    c.steps_per_call = 10
    c.log_every = 100
    c.sample_every = 1000
    c.checkpoint_every = 1000
    return c
