"""The bad-input sweep: train.py, sample.py and the evaluate CLI against malformed flags and
config values, missing and wrong paths, corrupt and empty data, a workdir of another model,
a read-only and a full workdir. Each gets one line naming the problem, exit code 2, no
traceback, and the workdir left as it was."""

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, run_cli
from PIL import Image

from genjax import cli
from genjax.config import ConfigError, base_config, resolve
from genjax.experiment import load_config
from genjax.logs import check_writable
from genjax.sampling import write_samples


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
    "shape the model cannot take": (  # =None: fields dcgan does not read
        ["--config.model.name=dcgan", "--config.model.hidden=None", "--config.model.depth=None"],
        ["dcgan", "(2,)"],
    ),
    "None for a shared field": (["--config.num_steps=None"], ["num_steps", "model.*"]),
    "unknown loss": (["--config.gan.loss=wasserstein"], ["wasserstein", "hinge"]),
    "missing config file": (None, ["no_such_config"]),
    "config file that fails": ("config file that fails", ["no_such_module"]),
    "zero batch": (["--config.batch_size=0"], ["batch_size"]),
    "unknown dtype": (["--config.dtype=float64"], ["float64", "bfloat16"]),
    "unknown parallel mode": (["--config.parallel=gpus"], ["gpus", "shard_map"]),
    "unknown nonfinite policy": (["--config.nonfinite=ignore"], ["ignore", "skip"]),
    "decay outside [0, 1]": (["--config.optim.decay_from=1.5"], ["decay_from"]),
    "negative eval_every": (["--config.eval_every=-1"], ["eval_every"]),
    "negative seed": (["--config.seed=-1"], ["seed"]),
    "data set over max_on_device_mb": (["--config.data.max_on_device_mb=0"], ["max_on_device_mb"]),
    "pack does not divide the batch": (["--config.gan.pack=3"], ["gan.pack=3", "batch_size"]),
    "npz path is a directory": (["--config.data.train=npz:/tmp"], ["/tmp"]),
    "a model field the model does not read": (
        ["--config.model.features=8"],
        ["config.model.features", "toy_mlp", "model.{depth, hidden, z_dim}"],
    ),
    "spectral norm for a model without d_norm": (
        ["--config.model.d_norm=spectral"],
        ["config.model.d_norm", "toy_mlp", "model.{depth, hidden, z_dim}"],
    ),
    "another family's field": (["--config.vae.beta=2"], ["config.vae.beta", "gan.{"]),
    "unknown scheme": (["--config.data.train=s3:bucket/x"], ["s3:bucket/x", "folder:DIR"]),
    "malformed flag": (["--config.num_steps"], ["num_steps"]),
    "stray argument": (["extra"], ["extra"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAIN_FLAGS))
def test_train_rejects_bad_input(tmp_path, case):
    flags, words = BAD_TRAIN_FLAGS[case]
    workdir = tmp_path / "run"
    if flags is None:
        args = ["train.py", "--config", "configs/no_such_config.py", "--workdir", workdir]
    elif flags == "config file that fails":
        config = tmp_path / "broken.py"
        config.write_text("import no_such_module\n\ndef get_config():\n    return None\n")
        args = ["train.py", "--config", config, "--workdir", workdir]
    else:
        args = [*TRAIN, "--workdir", workdir, *flags]
    assert_user_error(run_cli(*args), *words)
    assert not workdir.exists()


def test_a_config_file_that_sets_a_field_its_model_does_not_read(tmp_path):
    config = tmp_path / "conv.py"
    config.write_text(
        "from configs import vae_conv_mnist\n\n\ndef get_config():\n"
        "    c = vae_conv_mnist.get_config()\n    c.model.hidden = 256\n    return c\n"
    )
    args = ["train.py", "--config", config, "--workdir", tmp_path / "run"]
    assert_user_error(run_cli(*args), "config.model.hidden", "vae_conv", "features")
    assert not (tmp_path / "run").exists()


def test_none_unsets_model_and_family_fields_only(monkeypatch):
    from configs import gan_ring8

    monkeypatch.setattr(cli, "UNSET_FIELDS", ["model.hidden", "model.depth"])
    c = gan_ring8.get_config()
    c.model.name = "dcgan"
    with pytest.raises(ConfigError, match="model.depth, config.model.hidden"):
        resolve(c)
    model = resolve(cli.unset_fields(c)).model.to_dict()
    read = {"name": "dcgan", "z_dim": 2, "features": 64, "d_norm": "batch"}
    assert model == read | {key: None for key in model if key not in read}
    monkeypatch.setattr(cli, "UNSET_FIELDS", ["optim.lr"])
    with pytest.raises(ConfigError, match="optim.lr=None"):
        cli.unset_fields(c)


def test_evaluate_help_lists_its_flags():
    r = run_cli("-m", "genjax.evaluate", "--help")  # absl's --help exits 1
    for flag in ("--workdir", "--num_samples", "--nll_k", "--max_test", "--inception_weights"):
        assert flag in r.stdout, r.stdout


def test_url_workdir_is_refused():
    r = run_cli(*TRAIN, "--workdir", "gs://bucket/run")
    assert_user_error(r, "gs://bucket/run", "mounted")
    assert not (ROOT / "gs:").exists()  # pathlib's reading of the URL, relative to the cwd


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
    # the same model with another optimiser state (packed discriminator inputs, plain SGD)
    r = run_cli(*TRAIN, "--workdir", ring_workdir, "--config.gan.pack=2", "--config.optim.name=sgd")
    assert_user_error(r, str(ring_workdir), "gan.pack", "optim.name")
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
            ["reconstruct", "valid: samples, scatter"],
        ),
        (["--workdir", ring_workdir, "--out", tmp_path / "a.png", "--mode", "dream"], ["mode"]),
        (["--workdir", ring_workdir, "--out", tmp_path / "a.png", "--num", "0"], ["num"]),
    ]
    for args, words in cases:
        assert_user_error(run_cli("sample.py", *args), *words)
    assert snapshot(ring_workdir) == before


def test_sample_writes_png_and_npz(ring_workdir, tmp_path):
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
    # --seed decides the draw, and only it
    again = np.load(write_samples(ring_workdir, tmp_path / "again.npz", 300, seed=4))
    other = np.load(write_samples(ring_workdir, tmp_path / "other.npz", 300, seed=5))
    np.testing.assert_array_equal(again["samples"], points)
    assert not np.allclose(other["samples"], points)


def _mount_tmpfs(path, size, skip=True):
    """A small tmpfs; where mount is refused, the test skips with that reason (or, with
    skip=False, gets None)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode and not skip:
        return None
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip().splitlines()[0]}")
    return path


def _fill(path):
    """Write zeros to path until the file system has no block left.

    Unbuffered: a buffered file keeps the tail of the write that found the disk full and
    raises ENOSPC again when it is closed (whenever the free space was not a whole number
    of chunks, which made this test fail at random).
    """
    with open(path, "wb", buffering=0) as f:
        try:
            while f.write(b"\0" * 65536):
                pass
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def _umount(path):
    subprocess.run(["umount", str(path)], check=False)


def test_read_only_workdir(ring_workdir, tmp_path):
    """Root writes through file permissions, so as root the workdir is on a tmpfs mounted
    read-only; anyone else gets a copy without write permission."""
    if os.geteuid() != 0:
        run = tmp_path / "ro" / "run"
        shutil.copytree(ring_workdir, run)
        folders = [run, *(p for p in run.rglob("*") if p.is_dir())]
        for folder in folders:
            folder.chmod(0o555)
        try:
            before = snapshot(run)
            r = run_cli(*TRAIN, "--workdir", run, "--config.num_steps=200")
            assert_user_error(r, "not writable", "permission denied")
            assert snapshot(run) == before
        finally:
            for folder in folders:
                folder.chmod(0o755)
        return
    mount = _mount_tmpfs(tmp_path / "ro", size="32m")
    try:
        shutil.copytree(ring_workdir, mount / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        before = snapshot(mount / "run")
        r = run_cli(*TRAIN, "--workdir", mount / "run", "--config.num_steps=200")
        assert_user_error(r, "not writable", "read-only")
        assert snapshot(mount / "run") == before
    finally:
        _umount(mount)


# train.py with shutil.disk_usage reporting no free space (for a machine that refuses mount)
NO_SPACE_LEFT = (
    "import runpy, shutil, sys; usage = shutil.disk_usage; "
    "shutil.disk_usage = lambda path: usage(path)._replace(free=0); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def test_full_disk(ring_workdir, tmp_path):
    """As root, a tmpfs filled to its last block; where mount is refused, train.py is told by
    shutil.disk_usage that no space is free."""
    mount = _mount_tmpfs(tmp_path / "full", size="32m", skip=False)
    if mount is None:
        run = tmp_path / "run"
        shutil.copytree(ring_workdir, run)
        before = snapshot(run)
        r = run_cli("-c", NO_SPACE_LEFT, *TRAIN, "--workdir", run, "--config.num_steps=200")
        assert_user_error(r, "0.0 MB free")
        assert snapshot(run) == before
        return
    try:
        shutil.copytree(ring_workdir, mount / "run")
        _fill(mount / "filler")
        before = snapshot(mount / "run")
        r = run_cli(*TRAIN, "--workdir", mount / "run", "--config.num_steps=200")
        assert_user_error(r, "MB free")
        assert snapshot(mount / "run") == before
    finally:
        _umount(mount)


def test_a_disk_that_fills_during_the_run_exits_4_and_keeps_the_checkpoints(ring_workdir, tmp_path):
    """The start-up check passes, then the disk fills while the job trains: exit 4 with the
    error on the last line and no traceback, and once there is room again the same command
    resumes from a checkpoint written before the disk filled."""
    mount = _mount_tmpfs(tmp_path / "filling", size="32m")
    try:
        run = mount / "run"
        shutil.copytree(ring_workdir, run)  # checkpoints at steps 50 and 100
        args = [*TRAIN, "--workdir", run, "--config.checkpoint_every=100", "--config.log_every=50"]
        with open(tmp_path / "stderr", "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, *map(str, args), "--config.num_steps=1000000"],
                cwd=ROOT,
                env=dict(os.environ, JAX_PLATFORMS="cpu"),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                deadline = time.time() + 120
                while "150" not in (run / "metrics.jsonl").read_text() and proc.poll() is None:
                    assert time.time() < deadline, "no log row after the resumed step 100"
                    time.sleep(0.05)
                _fill(mount / "filler")
                proc.wait(timeout=120)
            finally:
                proc.kill()
        lines = [line for line in (tmp_path / "stderr").read_text().splitlines() if line.strip()]
        assert proc.returncode == 4, lines[-20:]
        assert lines[-1].startswith("error: I/O error") and "No space left" in lines[-1], lines[-1]
        # orbax's reports of the failed save (absl's "E1130 12:00:00.0 ..." lines) are dropped
        reports = [line for line in lines if re.search(r"Traceback|\bE\d{4} \d\d:", line)]
        assert not reports, reports[:10]
        (mount / "filler").unlink()
        kept = [int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()]
        r = run_cli(*args, f"--config.num_steps={max(kept) + 50}")
        assert r.returncode == 0, r.stderr[-3000:]
        resumed = re.search(r"resumed from step (\d+)", r.stderr)
        assert resumed and int(resumed[1]) >= 100, r.stderr[-3000:]
    finally:
        _umount(mount)


def test_empty_and_corrupt_data_files(tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty, images=np.zeros((0, 28, 28), np.uint8))
    r = run_cli(
        "train.py",
        "--config",
        "configs/vae_mlp_mnist.py",
        "--workdir",
        tmp_path / "a",
        f"--config.data.train=npz:{empty}",
    )
    assert_user_error(r, str(empty))
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 7)
    r = run_cli(
        "train.py",
        "--config",
        "configs/vae_mlp_mnist.py",
        "--workdir",
        tmp_path / "b",
        f"--config.data.train=idx:{idx}",
    )
    assert_user_error(r, str(idx))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_evaluate_rejects_bad_input(ring_workdir, tmp_path):
    before = snapshot(ring_workdir)
    evaluate = ("-m", "genjax.evaluate")
    cases = [
        (["--workdir", tmp_path / "nothing"], ["config.json"]),
        (["--workdir", ring_workdir, "--config.no_such_key=1"], ["no_such_key"]),
        (["--workdir", ring_workdir, "--num_samples=0"], ["num_samples"]),
        (["--workdir", ring_workdir, "--config.eval.nll_k=0"], ["eval.nll_k"]),
        (["--workdir", ring_workdir, "--config.data.test=npz:/no/such.npz"], ["/no/such.npz"]),
    ]
    for args, words in cases:
        assert_user_error(run_cli(*evaluate, *args), *words)
    assert snapshot(ring_workdir) == before


def test_check_writable_compares_the_free_bytes_with_the_bytes_needed(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    check_writable(tmp_path / "new" / "run", 2**20)  # room: nothing raised, nothing made
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="MB free"):
        check_writable(tmp_path / "run", 2 * free + 2**30)  # twice the space there is


def test_fail_prints_one_line_on_stderr_and_exits_with_the_code(capsys):
    with pytest.raises(SystemExit) as e:
        cli.fail("bad value\n  for   config.x\n(see configs/)")
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: bad value for config.x (see configs/)\n"


def test_run_or_exit_gives_user_errors_2_and_an_interrupt_130(capsys, monkeypatch):
    for name in ("orbax", "absl", "jax._src.xla_bridge"):  # run_or_exit lowers their levels
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)

    def raising(error):
        def fn():
            raise error

        return fn

    for error, code, line in [
        (ConfigError("no such data set"), 2, "error: no such data set"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
    ]:
        with pytest.raises(SystemExit) as e:
            cli.run_or_exit(raising(error))
        assert e.value.code == code
        assert capsys.readouterr().err.splitlines() == [line]


def test_sample_rejects_a_stray_argument(ring_workdir, tmp_path):
    r = run_cli("sample.py", "--workdir", ring_workdir, "--out", tmp_path / "a.npz", "extra")
    assert_user_error(r, "extra")
    assert not (tmp_path / "a.npz").exists()


def test_sample_draws_64_by_default(ring_workdir, tmp_path):
    r = run_cli("sample.py", "--workdir", ring_workdir, "--out", tmp_path / "s.npz")
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.load(tmp_path / "s.npz")["samples"].shape == (64, 2)  # the documented default


def test_sample_refuses_interpolate_on_2d_data(ring_workdir, tmp_path):
    with pytest.raises(ConfigError, match="interpolate"):
        write_samples(ring_workdir, tmp_path / "a.npz", 8, mode="interpolate")
    assert not (tmp_path / "a.npz").exists()


def test_sample_refuses_a_class_for_an_unconditional_model(ring_workdir, tmp_path):
    with pytest.raises(ConfigError, match="not class-conditional.*leave --class out"):
        write_samples(ring_workdir, tmp_path / "a.npz", 8, label=1)
    assert not (tmp_path / "a.npz").exists()


@pytest.mark.parametrize("name", ["a.jpg", "a"])
def test_sample_refuses_an_output_that_is_neither_png_nor_npz(tmp_path, name):
    # the suffix is checked before the workdir is read: no workdir needed
    with pytest.raises(ConfigError, match="valid: .png, .npz"):
        write_samples(tmp_path / "no-workdir", tmp_path / name)


def test_scatter_picture_shows_samples_over_real_points(ring_workdir, tmp_path):
    """The scatter picture has the generated points (blue) and the real data (grey)."""
    out = write_samples(ring_workdir, tmp_path / "s.png", 200, mode="scatter")
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert (31, 119, 180) in colours  # generated
    assert (190, 190, 190) in colours  # real


def test_load_config_fills_in_keys_an_older_config_json_lacks(tmp_path):
    """config.json of an older genjax (no gan/optim sections) gets today's defaults for them,
    and keeps the values it has."""
    old = json.loads(base_config().to_json_best_effort())
    del old["gan"], old["optim"]
    old["model"]["z_dim"] = 7
    (tmp_path / "config.json").write_text(json.dumps(old))
    config = resolve(load_config(tmp_path))
    assert config.model.z_dim == 7
    assert config.gan.pack == 1 and config.optim.name == "adam"  # today's defaults


def test_load_config_of_a_truncated_config_json_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model": {"name": ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "content", ["[]", '"x"', "null", "3", '{"model": 3}', '{"num_steps": "abc"}']
)
def test_load_config_of_a_config_json_that_is_json_but_no_config_is_a_user_error(tmp_path, content):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ConfigError, match="config.json: not a config train.py wrote"):
        load_config(tmp_path)
