"""Data parallelism and chunking do not change the maths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from genjax import experiment
from genjax.config import base_config
from genjax.parallel import DataParallel
from genjax.train import make_chunk

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def multidevice_report():
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    out = subprocess.run(
        [sys.executable, str(HERE / "multidevice_check.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize("family", ["gan", "vae"])
@pytest.mark.parametrize("mode", ["shard_map", "pmap"])
@pytest.mark.parametrize("data", ["on_device", "host"])
def test_eight_devices_equal_one_device_on_the_whole_batch(multidevice_report, family, mode, data):
    r = multidevice_report[f"{family}/{mode}/{data}"]
    assert r["steps"] == 6
    assert r["moved"] > 100, "training did not change the parameters; the test would be vacuous"
    assert r["violation"] <= 1.0, f"params differ: allclose(rtol=1e-5, atol=1e-6) x{r['violation']}"
    assert r["metrics_violation"] <= 1.0


def _ring_experiment():
    c = base_config()
    c.model.name, c.model.hidden = "toy_mlp", 32
    c.batch_size = 32
    return experiment.build(c, (2,))


def _train_ring(steps_per_call: int, num_steps: int = 20):
    exp = _ring_experiment()
    c = exp.config
    par = DataParallel("shard_map")
    state = par.replicate(exp.init_state(jax.random.PRNGKey(0)))
    dataset = par.replicate(
        {"point": np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)}
    )
    chunk = par.compile(make_chunk(exp.step(), steps_per_call, True, 1, c.batch_size), False)
    for _ in range(num_steps // steps_per_call):
        state, _ = chunk(state, dataset, jax.random.PRNGKey(3))
    return jax.device_get(state)


def test_steps_per_call_does_not_change_the_result():
    one, ten = _train_ring(1), _train_ring(10)
    assert int(one.step) == int(ten.step) == 20
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(ten), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    start = jax.device_get(_ring_experiment().init_state(jax.random.PRNGKey(0)))
    assert not np.allclose(jax.tree.leaves(start.g_params)[0], jax.tree.leaves(one.g_params)[0])
