"""Runs train chunks on 1 and on 8 simulated CPU devices and prints how far they differ:
a GAN and a VAE on images, and the sequence VAE (word dropout, free bits) on token rows.

Run by tests/test_steps.py in a subprocess, because the simulated device count must be
set before JAX starts and would otherwise change the rest of the suite.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from genjax import experiment  # noqa: E402
from genjax.config import base_config  # noqa: E402
from genjax.data.text import EOS_ID, PAD_ID  # noqa: E402
from genjax.parallel import DataParallel  # noqa: E402
from genjax.train import make_chunk  # noqa: E402

BATCH, LENGTH, CALLS = 16, 3, 2
VOCAB = 24


def small_config(family: str):
    """Plain SGD: unlike Adam it is not invariant to the gradients' scale, so a missing or
    doubled average over devices shows up in the parameters (with shard_map's default
    check_vma=True, gradients of replicated params come back already summed over devices, so
    a pmean on top would scale them by the device count)."""
    c = base_config()
    c.optim.name = "sgd"
    if family == "gan":  # BatchNorm in both networks, two critic updates per step
        c.model.name, c.model.features, c.model.z_dim = "dcgan", 8, 16
        c.optim.lr = 0.01
        c.gan.n_critic = 2
        c.gan.augment = "color,translation,cutout"  # per-example values of the global batch
        c.gan.ema_decay = 0.5
    else:
        c.model.name, c.model.hidden, c.model.z_dim = "vae_mlp", 32, 4
        c.optim.lr = 1e-4  # the ELBO sums over 784 pixels: large gradients
    c.batch_size = BATCH
    return c


def text_vae_config(tokens):
    """The sequence VAE with word dropout (a per-example draw over the global batch) and
    vae.free_bits at the median over latent dimensions of the initial model's mean KL on the
    data: some dimensions start clamped and some not, and a device's own 2 sentences often
    fall on the other side of the threshold than the global batch of 16, so a clamp decided
    per device instead of by the global batch's mean KL differs."""
    from genjax import objectives

    c = base_config()
    c.optim.name, c.optim.lr = "sgd", 0.1
    c.model.name, c.model.hidden, c.model.embed_dim, c.model.z_dim = "text_vae", 16, 8, 4
    c.data.vocab_size, c.data.max_len = VOCAB, tokens.shape[1]
    c.vae.word_dropout = 0.3
    c.batch_size = BATCH
    exp = experiment.build(c, "tokens", tokens.shape[1:])
    params = exp.init_state(jax.random.PRNGKey(0)).params
    mean, logvar = exp.models[0].apply({"params": params["encoder"]}, tokens)
    kl_dims = np.asarray(objectives.gaussian_kl_per_dim(mean, logvar)).mean(axis=0)
    c.vae.free_bits = float(np.median(kl_dims))
    return c


def final_params(config, initial, devices, mode, on_device, dataset):
    """(state, metrics) after CALLS chunks of LENGTH steps from the `initial` state."""
    (kind,) = dataset  # the one example key, named as its data kind: "image" or "tokens"
    exp = experiment.build(config, kind, dataset[kind].shape[1:])
    par = DataParallel(mode, devices)
    fn = make_chunk(exp.step(), LENGTH, on_device, exp.data_per_step, BATCH)
    chunk = par.compile(fn, data_sharded=not on_device, batch_axis=2)
    state = par.replicate(initial)
    key = jax.random.PRNGKey(1)
    rng = np.random.default_rng(0)
    for _ in range(CALLS):
        if on_device:
            data = par.replicate(dataset)
        else:
            idx = rng.integers(0, len(dataset[kind]), (LENGTH, exp.data_per_step, BATCH))
            data = par.shard_batch({kind: dataset[kind][idx]}, batch_axis=2)
        state, metrics = chunk(state, data, key)
    state = jax.device_get(par.unreplicate(state))
    return state, jax.device_get(par.unreplicate(metrics))


def max_violation(a, b, rtol=1e-5, atol=1e-6):
    """max over leaves of |a - b| / (atol + rtol |b|): <= 1 means allclose holds."""
    a, b = ([x for x in jax.tree.leaves(t) if np.asarray(x).dtype.kind == "f"] for t in (a, b))
    leaves = jax.tree.leaves(
        jax.tree.map(
            lambda x, y: (
                np.max(np.abs(np.asarray(x, np.float64) - y) / (atol + rtol * np.abs(y)))
                if np.size(x)
                else 0.0
            ),
            a,
            b,
        )
    )
    return float(max(leaves))


def main():
    assert len(jax.devices()) == 8, jax.devices()
    rng = np.random.default_rng(0)
    dataset = {"image": rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8)}
    report = {}
    tokens = rng.integers(4, VOCAB, (64, 8)).astype(np.int32)  # words (ids after the specials)
    ends = rng.integers(2, 8, 64)  # each sentence's <eos>, then <pad>
    tokens[np.arange(64), ends] = EOS_ID
    tokens[np.arange(8)[None, :] > ends[:, None]] = PAD_ID
    cases = {
        "gan": (small_config("gan"), dataset),
        "vae": (small_config("vae"), dataset),
        "text_vae": (text_vae_config(tokens), {"tokens": tokens}),
    }
    for family, (config, data) in cases.items():
        (kind,) = data
        exp = experiment.build(config, kind, data[kind].shape[1:])
        initial = jax.device_get(exp.init_state(jax.random.PRNGKey(0)))
        # the host path's sharding does not depend on the data kind: the images cover it
        for on_device in (True, False) if family != "text_vae" else (True,):
            one = jax.devices()[:1]
            ref, ref_m = final_params(config, initial, one, "shard_map", on_device, data)
            for mode in ("shard_map", "pmap"):
                got, got_m = final_params(config, initial, jax.devices(), mode, on_device, data)
                name = f"{family}/{mode}/{'on_device' if on_device else 'host'}"
                report[name] = {
                    "violation": max_violation(got, ref),
                    "steps": int(got.step),
                    "moved": max_violation(ref, initial),
                    "metrics_violation": max_violation(got_m, ref_m, rtol=1e-4, atol=1e-5),
                }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
