"""DCGAN (Radford et al. 2016) on CelebA faces at 64x64x3: the GAN case study.

    python train.py --config configs/dcgan_celeba64.py --workdir runs/dcgan_celeba64

Data: `tfds:celeb_a` (train split, 162,770 aligned 218x178 (HxW) photos), with the standard
preprocessing of 64x64 DCGAN-era code (e.g. carpedm20/DCGAN-tensorflow): a centre crop of
108x108 pixels (`data.center_crop`), then a resize to 64x64 (`data.image_size`). TFDS
downloads and prepares CelebA on first use (about 1.4 GB; needs the network; set
`--config.data.data_dir` to a prepared copy on a machine without one). At 64x64x3 the
training set is about 2 GB, so it is streamed by the host pipeline (`data.on_device=False`),
each image decoded, cropped and resized as it is read.

Model and optimiser as in the DCGAN paper: 64 base features, a 100-d latent, Adam with
lr 2e-4 and b1 0.5, batch 128. num_steps 6,400 is about 5 epochs (1,272 steps per epoch).

Compare with: the feature-space metrics of `python -m genjax.evaluate --workdir
runs/dcgan_celeba64 --inception_weights fid_inception.npz` (docs/metrics.md): `fd_inception`
(the FID's formula with FID Inception weights), `kid_inception`, precision/recall and
density/coverage, each beside its `*_floor`, the value real training images get against the
test split at the same sample size. CelebA has no class labels, so there are no classifier
metrics. No published CelebA-64 DCGAN FID is given to compare with: published numbers (e.g.
Heusel et al. 2017, TTUR) use their own crop, learning rates, sample count and reference
statistics, and FID depends on all of them; compare runs of this config with each other and
with the floor.
"""

from genjax.config import base_config


def celeba64_data(c):
    """`c` reading CelebA as faces at 64x64: the 108-pixel centre crop resized to 64, streamed
    by the host pipeline (shared by the CelebA configs)."""
    c.data.train = "tfds:celeb_a"
    c.data.center_crop = 108
    c.data.image_size = 64
    c.data.on_device = False
    return c


def get_config():
    c = celeba64_data(base_config())
    c.model.name = "dcgan"
    c.model.z_dim = 100
    c.model.features = 64
    c.batch_size = 128
    c.optim.lr = 2e-4
    c.optim.b1 = 0.5
    c.num_steps = 6400
    c.log_every = 100
    c.sample_every = 800
    c.checkpoint_every = 800
    return c
