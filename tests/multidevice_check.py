"""Runs train chunks on 1 and on 8 simulated CPU devices and prints how far they differ.

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
from genjax.parallel import DataParallel  # noqa: E402
from genjax.train import make_chunk  # noqa: E402

BATCH, LENGTH, CALLS = 16, 3, 2


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


def final_params(config, devices, mode, on_device, dataset):
    exp = experiment.build(config, "image", dataset["image"].shape[1:])
    par = DataParallel(mode, devices)
    fn = make_chunk(exp.step(), LENGTH, on_device, exp.data_per_step, BATCH)
    chunk = par.compile(fn, data_sharded=not on_device, batch_axis=2)
    state = par.replicate(exp.init_state(jax.random.PRNGKey(0)))
    key = jax.random.PRNGKey(1)
    rng = np.random.default_rng(0)
    for _ in range(CALLS):
        if on_device:
            data = par.replicate(dataset)
        else:
            idx = rng.integers(0, len(dataset["image"]), (LENGTH, exp.data_per_step, BATCH))
            data = par.shard_batch({"image": dataset["image"][idx]}, batch_axis=2)
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
    for family in ("gan", "vae"):
        config = small_config(family)
        for on_device in (True, False):
            ref, ref_m = final_params(config, jax.devices()[:1], "shard_map", on_device, dataset)
            for mode in ("shard_map", "pmap"):
                got, got_m = final_params(config, jax.devices(), mode, on_device, dataset)
                name = f"{family}/{mode}/{'on_device' if on_device else 'host'}"
                report[name] = {
                    "violation": max_violation(got, ref),
                    "steps": int(got.step),
                    "moved": max_violation(
                        ref,
                        jax.device_get(
                            experiment.build(config, "image", (28, 28, 1)).init_state(
                                jax.random.PRNGKey(0)
                            )
                        ),
                    ),
                    "metrics_violation": max_violation(got_m, ref_m, rtol=1e-4, atol=1e-5),
                }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
