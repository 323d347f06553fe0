"""configs/dcgan_celeba64.py: it resolves and builds at 64x64x3, and trains on CelebA-sized
images (218x178, centre-cropped to 108, resized to 64) through the host pipeline."""

import importlib
import json

import numpy as np

from genjax import config as config_lib
from genjax import experiment
from genjax.train import Trainer


def celeba64_config():
    return importlib.import_module("configs.dcgan_celeba64").get_config()


def test_celeba64_config_is_the_dcgan_papers_with_the_standard_crop():
    config = celeba64_config()
    assert (config.model.name, config.model.features, config.model.z_dim) == ("dcgan", 64, 100)
    assert (config.data.train, config.data.center_crop, config.data.image_size) == (
        "tfds:celeb_a",
        108,
        64,
    )
    assert (config.optim.lr, config.optim.b1, config.batch_size) == (2e-4, 0.5, 128)
    assert config.data.on_device is False
    exp = experiment.build(config_lib.resolve(config), "image", (64, 64, 3))
    assert exp is not None


def test_celeba64_config_trains_two_steps_on_celeba_sized_images(tmp_path):
    # 218 x 178 images, centre-cropped to 108 and resized: the config's data path
    images = np.random.default_rng(0).integers(0, 256, (16, 218, 178, 3), np.uint8)
    np.savez(tmp_path / "faces.npz", images=images)
    config = celeba64_config()
    config.data.train = f"npz:{tmp_path / 'faces.npz'}"
    config.batch_size = 8
    config.model.features = 4
    config.data.image_size = 32  # the crop, then a resize; the 64 network is built above
    config.steps_per_call = 1
    config.num_steps = 2
    config.log_every = config.sample_every = config.checkpoint_every = 2
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.train_source.shape == (32, 32, 3)
    state = trainer.run()
    assert int(state.step) == 2
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows and rows[-1]["step"] == 2
    assert all(np.isfinite(row[k]) for row in rows for k in ("d_loss", "g_loss"))


def test_vae_celeba64_trains_on_mock_celeb_a_and_reports_bits_per_dim(tmp_path):
    """The faces VAE through tfds:celeb_a (mock examples at CelebA's 218x178, the config's
    crop and resize): two steps, a checkpoint, and the family's test metrics, whose
    test_bits_per_dim is test_nll over H*W*C*ln 2."""
    import tensorflow_datasets as tfds

    config = importlib.import_module("configs.vae_celeba64").get_config()
    config.batch_size, config.model.features, config.model.z_dim = 4, 4, 8
    config.data.image_size = 8  # the 108 crop resized to 8: a small network, same data path
    config.steps_per_call = 1
    config.num_steps = 2
    config.log_every = config.checkpoint_every = 2
    config.sample_every = 0
    with tfds.testing.mock_data(num_examples=8):
        trainer = Trainer(config, tmp_path / "run")
        assert trainer.train_source.shape == (8, 8, 3)
        state = trainer.run()
        test = trainer.test_source.to_arrays()
    got = trainer.experiment.test_metrics(state, test, k=2, seed=0)
    assert (tmp_path / "run" / "checkpoints" / "2").exists()
    assert np.isfinite(got["test_nll"]) and got["test_nll"] > 0
    expected = got["test_nll"] / (8 * 8 * 3 * np.log(2))
    np.testing.assert_allclose(got["test_bits_per_dim"], expected, rtol=1e-6)
