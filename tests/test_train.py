"""End to end: training learns, resumes where it stopped, and writes what it promises."""

import json
import logging
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT, run_cli

from genjax import objectives, sampling
from genjax.config import ConfigError
from genjax.data import MIXTURES, load_source
from genjax.families import GANState, VAEState
from genjax.train import Preemption, Trainer, check_workdir, train_and_evaluate


def load_config(name, **overrides):
    import importlib

    config = importlib.import_module(f"configs.{name}").get_config()
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def captured_modes(points, name="ring8"):
    """Modes that are the nearest mode of at least one sample within 3 sigma of it."""
    means, std = MIXTURES[name]
    d = np.linalg.norm(points[:, None, :] - means[None], axis=-1)
    nearest = d.argmin(axis=1)
    good = d.min(axis=1) < 3 * std
    return len(set(nearest[good].tolist())), good.mean()


def test_ring8_gan_captures_most_modes(tmp_path):
    config = load_config(
        "gan_ring8", num_steps=3000, checkpoint_every=0, sample_every=0, eval_every=1500
    )
    trainer = Trainer(config, tmp_path / "run")
    state = trainer.run()
    points = np.asarray(trainer.experiment.sample(state, jax.random.PRNGKey(7), 2500))
    modes, quality = captured_modes(points)
    assert modes >= 6, (modes, quality)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows[-1]["step"] == 3000 and {"d_loss", "g_loss", "steps_per_sec"} <= set(rows[-1])
    evals = [json.loads(line) for line in open(tmp_path / "run" / "eval.jsonl")]
    assert [e["step"] for e in evals] == [1500, 3000] and evals[-1]["modes"] >= 6


def held_out_negative_elbo(state, models, x, key):
    """Mean negative ELBO of uint8 images x under `state`, with a fixed binarisation."""
    return float(jax.jit(_negative_elbo, static_argnums=1)(state, models, x, key))


def _negative_elbo(state, models, x, key):
    x = (jax.random.uniform(key, x.shape) < x / 255.0).astype(np.float32)
    enc = {"params": state.params["encoder"], "batch_stats": state.batch_stats["encoder"]}
    dec = {"params": state.params["decoder"], "batch_stats": state.batch_stats["decoder"]}
    mean, logvar = models[0].apply(enc, x, train=False)
    z = mean + jax.numpy.exp(0.5 * logvar) * jax.random.normal(
        jax.random.fold_in(key, 1), mean.shape
    )
    out = models[1].apply(dec, z, train=False)
    return objectives.negative_elbo(out, x, mean, logvar)[0].mean()


def test_vae_test_negative_elbo_falls_within_a_few_hundred_steps(tmp_path):
    config = load_config("vae_mlp_mnist", num_steps=400, checkpoint_every=0, sample_every=0)
    trainer = Trainer(config, tmp_path / "run")
    exp = trainer.experiment
    start = exp.init_state(jax.random.fold_in(trainer.key, 1))
    state = trainer.run()
    test = load_source("mnist5k", "test").to_arrays()["image"]
    key = jax.random.PRNGKey(0)
    before = held_out_negative_elbo(start, exp.models, test, key)
    after = held_out_negative_elbo(state, exp.models, test, key)
    # Untrained: about 784 ln 2 = 543 nats; 400 steps of the MLP VAE reach well under 160.
    assert before > 500 and after < 160, (before, after)


def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="genjax.train")
    config = load_config(
        "vae_mlp_mnist",
        num_steps=40,
        checkpoint_every=20,
        log_every=10,
        sample_every=20,
        steps_per_call=10,
    )
    train_and_evaluate(config, tmp_path / "a")
    config.num_steps = 60
    caplog.clear()
    resumed = train_and_evaluate(config, tmp_path / "a")
    # restored, not retrained from 0 (which, RNG being a function of seed and step, would give
    # the same numbers)
    assert "resumed from step 40" in caplog.text
    straight = train_and_evaluate(config, tmp_path / "b")
    steps_logged = [json.loads(line)["step"] for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert steps_logged == [10, 20, 30, 40, 50, 60]
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == [
        f"step_{s:08d}.png" for s in (20, 40, 60)
    ]
    assert list((tmp_path / "a").glob("tensorboard/events.out.tfevents.*"))
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["model"]["name"] == "vae_mlp" and saved["num_steps"] == 60


def test_host_pipeline_trains_and_resumes_exactly(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="genjax.train")
    config = load_config(
        "vae_mlp_mnist",
        num_steps=30,
        checkpoint_every=10,
        log_every=10,
        sample_every=0,
        steps_per_call=5,
    )
    config.data.on_device = False
    config.num_steps = 20
    train_and_evaluate(config, tmp_path / "a")
    config.num_steps = 30
    caplog.clear()
    resumed = train_and_evaluate(config, tmp_path / "a")
    assert "resumed from step 20" in caplog.text
    straight = train_and_evaluate(config, tmp_path / "b")
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigkill_then_the_same_command_resumes(tmp_path):
    workdir = tmp_path / "run"
    cmd = [
        sys.executable,
        "train.py",
        "--config",
        "configs/vae_mlp_mnist.py",
        "--workdir",
        str(workdir),
        "--config.num_steps=800",
        "--config.checkpoint_every=100",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        saved = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
        if saved and max(saved) >= 200:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = max(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())
    assert 200 <= saved < 800
    rows_before = len(open(workdir / "metrics.jsonl").readlines())
    r = run_cli(*cmd[1:])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from step {saved}" in r.stderr
    new = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")][rows_before:]
    assert new[0] > saved and new[-1] == 800


@pytest.mark.parametrize(
    "name", ["gan_mlp_mnist", "dcgan_mnist", "vae_conv_mnist", "vae_pixel_mnist", "gan_grid25"]
)
def test_every_config_trains_a_few_steps(tmp_path, name):
    config = load_config(
        name,
        num_steps=4,
        steps_per_call=2,
        log_every=2,
        sample_every=4,
        checkpoint_every=4,
        batch_size=16,
    )
    state = train_and_evaluate(config, tmp_path / "run")
    assert int(state.step) == 4
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert all(np.isfinite(v) for row in rows for v in row.values())
    assert (tmp_path / "run" / "samples" / "step_00000004.png").exists()
    family = GANState if name.startswith(("gan", "dcgan")) else VAEState
    assert isinstance(state, family)
    if name == "gan_grid25":
        return
    modes = ["interpolate"] + (["reconstruct"] if family is VAEState else [])
    for mode in modes:  # sample.py's other pictures, as raw images: 12 -> 2 rows of 8, 12 pairs
        out = sampling.write_samples(tmp_path / "run", tmp_path / f"{mode}.npz", 12, mode=mode)
        images = np.load(out)["samples"]
        assert images.shape == (16 if mode == "interpolate" else 24, 28, 28, 1), mode
        assert images.dtype == np.uint8


@pytest.mark.parametrize("on_device", [True, False])
def test_no_host_round_trip_between_log_and_checkpoint_steps(tmp_path, on_device):
    """Between log and checkpoint steps the loop never waits for the device: when it
    dispatches a compiled call, the previous call is still running.

    (jax.transfer_guard cannot show this on CPU, where device buffers are host memory and a
    read of one is not a transfer; any read of a result, or other wait on it, would make
    the previous call finished at every dispatch.) Each call is 10 steps of the MLP VAE,
    far longer than the loop's own work between calls.
    """
    config = load_config(
        "vae_mlp_mnist",
        num_steps=200,
        steps_per_call=10,
        log_every=200,
        checkpoint_every=200,
        sample_every=0,
    )
    config.data.on_device = on_device
    trainer = Trainer(config, tmp_path / "run")
    compiled_chunk = trainer.chunk
    previous, still_running = [], []

    def chunk(length):
        call = compiled_chunk(length)

        def dispatch(*args):
            if previous:
                still_running.append(not all(x.is_ready() for x in previous))
            out = call(*args)
            previous[:] = jax.tree.leaves(out)
            return out

        return dispatch

    trainer.chunk = chunk
    trainer.run()
    assert len(still_running) == 19
    assert sum(still_running) >= 15, still_running


def test_pmap_is_refused_with_several_processes(tmp_path, monkeypatch):
    """pmap's batches and unreplicate are per process; several processes need shard_map."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ConfigError, match="shard_map"):
        Trainer(load_config("gan_ring8", parallel="pmap"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _small_ring8(**overrides):
    """gan_ring8 with 2 x 16 MLPs and batch 32: a few steps compile and run in seconds."""
    config = load_config("gan_ring8", batch_size=32, **overrides)
    config.model.hidden = 16
    return config


def _checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_events_fall_on_their_own_intervals_and_on_the_last_step(tmp_path, monkeypatch):
    # Intervals that are not multiples of each other, nor of steps_per_call or num_steps:
    # logs at 2, 4, 6 and the last step 7; evaluation at 5; checkpoints at 3, 6 and 7 (hand).
    config = _small_ring8(
        num_steps=7, steps_per_call=5, log_every=2, checkpoint_every=3, eval_every=5
    )
    config.sample_every, config.keep_checkpoints = 0, 10
    evaluated = []
    monkeypatch.setattr(Trainer, "_evaluate", lambda self, step, *_: evaluated.append(step))
    state = Trainer(config, tmp_path / "run").run()
    assert int(state.step) == 7
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4, 6, 7]
    assert evaluated == [5]
    assert _checkpoint_steps(tmp_path / "run") == [3, 6, 7]
    assert [p.name for p in (tmp_path / "run" / "samples").iterdir()] == ["step_00000007.png"]


def test_a_preemption_saves_at_the_current_step_and_returns(tmp_path, monkeypatch):
    # SIGTERM noticed after step 3: a checkpoint at 3, between checkpoint steps, and no more.
    import genjax.train

    config = _small_ring8(num_steps=10, steps_per_call=3, log_every=0, checkpoint_every=100)
    config.sample_every = 0
    monkeypatch.setattr(genjax.train.Preemption, "reached", lambda self, step: step >= 3)
    state = Trainer(config, tmp_path / "run").run()
    assert int(state.step) == 3
    assert _checkpoint_steps(tmp_path / "run") == [3]


def test_each_step_of_a_chunk_draws_with_the_key_of_its_own_step():
    # make_chunk's contract: step s of the run draws its batch with fold_in(fold_in(key, s),
    # 0) and steps with fold_in(fold_in(key, s), 1), whatever the chunk it falls in.
    from flax import struct

    from genjax.train import make_chunk

    @struct.dataclass
    class Record:
        step: jax.Array
        rows: jax.Array  # the data rows step s drew
        keys: jax.Array  # the key step s got

    def record(state, batch, key):
        s = state.step
        rows = state.rows.at[s].set(batch["x"][0, :, 0])
        return Record(s + 1, rows, state.keys.at[s].set(key)), {"step": s}

    data = {"x": jax.numpy.arange(1000, dtype=jax.numpy.int32)[:, None]}
    key = jax.random.PRNGKey(3)
    chunk = make_chunk(record, 2, True, 1, 8)
    run = jax.jit(jax.vmap(lambda st, _: chunk(st, data, key), axis_name="data"))
    state = Record(
        np.zeros(1, np.int32), np.zeros((1, 4, 8), np.int32), np.zeros((1, 4, 2), np.uint32)
    )
    for _ in range(2):  # two chunks of two steps
        state, _ = run(state, np.zeros(1))
    for s in range(4):
        step_key = jax.random.fold_in(key, s)
        rows = jax.random.randint(jax.random.fold_in(step_key, 0), (1, 8), 0, 1000)[0]
        np.testing.assert_array_equal(state.rows[0, s], rows)
        np.testing.assert_array_equal(state.keys[0, s], jax.random.fold_in(step_key, 1))
    assert len({tuple(r) for r in np.asarray(state.rows[0])}) == 4


def _workdir_of(tmp_path, config, checkpoint=True):
    """A workdir trained with `config`, as check_workdir sees it: config.json + checkpoints/."""
    (tmp_path / "checkpoints").mkdir(parents=True)
    if checkpoint:
        (tmp_path / "checkpoints" / "20").mkdir()
    (tmp_path / "config.json").write_text(config.to_json_best_effort())
    return tmp_path


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("gan_ring8", "data.train", "grid25"),  # same shapes: would resume on other data
        ("vae_mlp_mnist", "vae.likelihood", "gaussian"),
        ("vae_mlp_mnist", "data.image_size", 32),
    ],
)
def test_a_workdir_refuses_a_config_that_differs_in_a_checkpoint_field(tmp_path, name, key, value):
    workdir = _workdir_of(tmp_path, load_config(name))
    check_workdir(load_config(name), workdir)  # the same config resumes
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_workdir(load_config(name, **{key: value}), workdir)


def test_a_workdir_of_an_older_genjax_or_without_checkpoints_does_not_block(tmp_path):
    old = json.loads(load_config("gan_ring8").to_json_best_effort())
    del old["gan"], old["optim"]  # written before gan.pack and optim.name were recorded
    workdir = _workdir_of(tmp_path / "a", load_config("gan_ring8"))
    (workdir / "config.json").write_text(json.dumps(old))
    check_workdir(load_config("gan_ring8"), workdir)
    # another model's config.json, but an empty checkpoints/ (a run that never saved)
    empty = _workdir_of(tmp_path / "b", load_config("vae_mlp_mnist"), checkpoint=False)
    check_workdir(load_config("gan_ring8"), empty)


def test_preemption_puts_back_the_sigterm_handler_it_replaced():
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with Preemption():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_max_on_device_mb_is_in_mebibytes(tmp_path):
    # mnist5k's 4,500 training images: 4500 * 28 * 28 bytes = 3.36 MiB (labels not counted)
    config = load_config("vae_mlp_mnist")
    config.data.max_on_device_mb = 3
    with pytest.raises(ConfigError, match="max_on_device_mb=3"):
        Trainer(config, tmp_path / "a")._on_device_dataset()  # what run() checks first
    config.data.max_on_device_mb = 4
    Trainer(config, tmp_path / "b")._on_device_dataset()  # accepted


def test_schedule_ends_each_call_on_the_next_event_and_the_last_step_does_everything():
    from types import SimpleNamespace

    from genjax.train import Events, Schedule

    c = SimpleNamespace(
        steps_per_call=10, num_steps=25, log_every=4, sample_every=0, checkpoint_every=6,
        eval_every=0,
    )  # fmt: skip
    schedule, step, lengths = Schedule(c, writes_pictures=True), 0, []
    while step < c.num_steps:
        lengths.append(schedule.call_length(step))
        step += lengths[-1]
    assert lengths == [4, 2, 2, 4, 4, 2, 2, 4, 1]  # events at 4, 6, 8, 12, 16, 18, 20, 24, 25
    assert schedule.events(24) == Events(log=True, sample=False, evaluate=False, save=True)
    assert schedule.events(25) == Events(log=True, sample=True, evaluate=False, save=True)
    assert not schedule.events(5) and schedule.events(6)
    assert not Schedule(c, writes_pictures=False).events(25).sample


def test_gan_options_resume_bitwise_and_the_ema_is_in_the_checkpoint(tmp_path):
    # Spectral norm, LSGAN, lazy R1, DiffAugment and the EMA together, on 8x8 images.
    from genjax.config import base_config
    from genjax.experiment import restore

    images = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), np.uint8)
    np.savez(tmp_path / "tiny.npz", images=images)

    def config(num_steps):
        c = base_config()
        c.model.name, c.model.features, c.model.z_dim, c.model.d_norm = "dcgan", 4, 8, "spectral"
        c.data.train, c.batch_size = f"npz:{tmp_path / 'tiny.npz'}", 8
        c.gan.loss, c.gan.r1_weight, c.gan.r1_every = "lsgan", 1.0, 2
        c.gan.augment, c.gan.ema_decay = "translation,cutout", 0.9
        c.num_steps, c.steps_per_call, c.checkpoint_every, c.log_every = num_steps, 2, 4, 4
        c.sample_every = 0
        return c

    whole = Trainer(config(8), tmp_path / "whole").run()
    Trainer(config(4), tmp_path / "halves").run()
    resumed = Trainer(config(8), tmp_path / "halves").run()
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    saved = restore(tmp_path / "whole").state
    for a, b in zip(jax.tree.leaves(saved.g_ema), jax.tree.leaves(whole.g_ema), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(jax.tree.leaves(whole.g_ema)[0], jax.tree.leaves(whole.g_params)[0])
