"""Bad input: one line naming the problem, exit code 2, no traceback, the workdir untouched."""

import numpy as np
import pytest
from conftest import run_cli


def snapshot(directory):
    """Every file under `directory` with its size and modification time."""
    if not directory.exists():
        return None
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


def assert_user_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr[-2000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1
    for word in words:
        assert word.lower() in errors[0].lower(), errors[0]


@pytest.fixture(scope="module")
def ring_workdir(tmp_path_factory):
    """A small trained ring8 GAN."""
    workdir = tmp_path_factory.mktemp("ring") / "run"
    r = run_cli(
        "train.py",
        "--config",
        "configs/gan_ring8.py",
        "--workdir",
        workdir,
        "--config.num_steps=100",
        "--config.checkpoint_every=50",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir


TRAIN = ("train.py", "--config", "configs/gan_ring8.py")

BAD_TRAIN_FLAGS = {
    "unknown config key": (["--config.no_such_key=1"], ["no_such_key"]),
    "wrong type": (["--config.num_steps=many"], ["num_steps"]),
    "negative steps": (["--config.num_steps=-5"], ["num_steps"]),
    "unknown model": (["--config.model.name=transformer"], ["transformer", "dcgan"]),
    "unknown data set": (["--config.data.train=cifar11"], ["cifar11", "mnist5k"]),
    "missing npz": (["--config.data.train=npz:/no/such/file.npz"], ["/no/such/file.npz"]),
    "missing idx dir": (["--config.data.train=idx:/no/such/dir"], ["/no/such/dir"]),
    "shape the model cannot take": (["--config.model.name=dcgan"], ["dcgan", "(2,)"]),
    "unknown loss": (["--config.gan.loss=wasserstein"], ["wasserstein", "hinge"]),
    "missing config file": (None, ["no_such_config"]),
    "stray argument": (["extra"], ["extra"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAIN_FLAGS))
def test_train_rejects_bad_input(tmp_path, case):
    flags, words = BAD_TRAIN_FLAGS[case]
    workdir = tmp_path / "run"
    if flags is None:
        args = ["train.py", "--config", "configs/no_such_config.py", "--workdir", workdir]
    else:
        args = [*TRAIN, "--workdir", workdir, *flags]
    assert_user_error(run_cli(*args), *words)
    assert not workdir.exists() or not any(workdir.rglob("*.json*"))


def test_workdir_of_another_model_is_refused_and_left_as_it_was(ring_workdir):
    before = snapshot(ring_workdir)
    r = run_cli(
        "train.py",
        "--config",
        "configs/dcgan_mnist.py",
        "--workdir",
        ring_workdir,
        "--config.num_steps=1",
    )
    assert_user_error(r, str(ring_workdir), "toy_mlp")
    assert snapshot(ring_workdir) == before


def test_batch_not_divisible_by_device_count(tmp_path):
    r = run_cli(
        *TRAIN,
        "--workdir",
        tmp_path / "run",
        "--config.batch_size=3",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert_user_error(r, "batch_size=3", "2 devices")


def test_image_size_the_model_cannot_take(tmp_path):
    r = run_cli(
        "train.py",
        "--config",
        "configs/dcgan_mnist.py",
        "--workdir",
        tmp_path / "run",
        "--config.data.image_size=30",
    )
    assert_user_error(r, "30")


def test_corrupt_npz(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    r = run_cli(
        "train.py",
        "--config",
        "configs/vae_mlp_mnist.py",
        "--workdir",
        tmp_path / "run",
        f"--config.data.train=npz:{bad}",
    )
    assert_user_error(r, str(bad))


def test_missing_workdir_flag():
    assert_user_error(run_cli(*TRAIN), "workdir")


def test_sample_rejects_bad_input(ring_workdir, tmp_path):
    before = snapshot(ring_workdir)
    cases = [
        (["--workdir", tmp_path / "empty", "--out", tmp_path / "a.png"], ["config.json"]),
        (["--workdir", ring_workdir, "--out", tmp_path / "a.gif"], [".gif", ".png"]),
        (["--workdir", ring_workdir, "--out", tmp_path / "no" / "a.png"], ["no such directory"]),
        (
            ["--workdir", ring_workdir, "--out", tmp_path / "a.png", "--mode", "reconstruct"],
            ["vae"],
        ),
        (["--workdir", ring_workdir, "--out", tmp_path / "a.png", "--mode", "dream"], ["mode"]),
        (["--workdir", ring_workdir, "--out", tmp_path / "a.png", "--num", "0"], ["num"]),
    ]
    for args, words in cases:
        assert_user_error(run_cli("sample.py", *args), *words)
    assert snapshot(ring_workdir) == before


def test_sample_writes_png_and_npz(ring_workdir, tmp_path):
    from PIL import Image

    r = run_cli("sample.py", "--workdir", ring_workdir, "--out", tmp_path / "s.png")
    assert r.returncode == 0, r.stderr[-2000:]
    with Image.open(tmp_path / "s.png") as image:
        assert image.format == "PNG" and image.size == (512, 512)
    r = run_cli(
        "sample.py",
        "--workdir",
        ring_workdir,
        "--out",
        tmp_path / "s.npz",
        "--num",
        "300",
        "--seed",
        "4",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    points = np.load(tmp_path / "s.npz")["samples"]
    assert points.shape == (300, 2) and points.dtype == np.float32
    assert np.isfinite(points).all()
