"""SNGAN (Miyato et al. 2018) with the ResNet networks for 32 x 32 on CIFAR-10, trained as in
Mimicry (Lee & Town 2020): hinge loss, 5 discriminator updates per generator update, Adam
2e-4 (b1 0, b2 0.9) for both networks decayed linearly to 0 over the run, batch 64, 100,000
generator steps.

python train.py --config configs/sngan_cifar10.py --workdir runs/sngan_cifar10

Published figure to compare with: Mimicry's README (Baselines, CIFAR-10) reports FID 16.77
+- 0.04 (IS 7.97 +- 0.06, KID 0.0125) for this model after 100K steps, with 50K generated
images against 50K real images of the CIFAR-10 *training* split, features from the TensorFlow
FID Inception graph (inception-2015-12-05, pool3; Heusel et al. 2017), the generator in eval
mode (BatchNorm's running statistics). genjax's `fd_S` uses pytorch-fid's port of those
weights (`--inception_weights`) but compares against the test split, with `eval.num_samples`
generated images: a different protocol, so set `--num_samples 50000` and read its `fd_S`
beside its `fd_S_floor` rather than as Mimicry's number. Mimicry's reproducibility table
also lists FID 23.90 +- 0.20 for this model against the paper's 21.7 +- 0.21 (Miyato et al.
2018), both from 10K real and 5K generated images.

The training set (50,000 x 32 x 32 x 3 uint8, 146 MiB) is kept on the device (data.on_device,
under the 2048 MiB limit): batches are drawn inside the compiled step, with no host pipeline
to keep up with five real batches per step.
"""

from genjax.config import base_config


def get_config():
    c = base_config()
    c.model.name = "sngan_resnet"
    c.model.z_dim = 128
    c.model.features = 256
    c.model.d_features = 128
    c.gan.loss = "hinge"
    c.gan.n_critic = 5
    c.data.train = "tfds:cifar10"
    c.data.on_device = True
    c.batch_size = 64
    c.optim.lr = 2e-4
    c.optim.b1 = 0.0
    c.optim.b2 = 0.9
    c.optim.decay_from = 0.0  # Mimicry's lr_decay='linear': from the first step to 0
    c.num_steps = 100_000
    c.steps_per_call = 50
    c.log_every = 500
    c.sample_every = 5000
    c.checkpoint_every = 5000
    c.keep_checkpoints = 3
    return c
