"""Trains a small GAN and VAE as one of several JAX processes; process 0 saves the params.

Run by tests/test_resilience.py: twice as 2 processes on 127.0.0.1 (CPU, gloo
collectives), once as a single process, and the final parameters compared.
Usage: multiprocess_check.py OUT_DIR NUM_PROCESSES PROCESS_ID PORT
"""

import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from genjax.config import base_config  # noqa: E402
from genjax.parallel import initialize_distributed  # noqa: E402
from genjax.train import train_and_evaluate  # noqa: E402


def configs():
    gan = base_config()
    gan.model.name, gan.model.hidden, gan.data.train = "toy_mlp", 32, "ring8"
    gan.gan.n_critic = 2
    vae = base_config()
    vae.model.name, vae.model.hidden, vae.model.z_dim = "vae_mlp", 64, 8
    vae.data.train, vae.data.on_device = "mnist5k", False  # the host pipeline, sharded
    vae.optim.lr, vae.optim.b1 = 1e-3, 0.9
    for c in (gan, vae):
        c.batch_size, c.num_steps, c.steps_per_call = 16, 20, 5
        c.log_every, c.sample_every, c.checkpoint_every = 10, 0, 10
    return {"gan": gan, "vae": vae}


def main(out, num_processes, process_id, port):
    if num_processes > 1:
        initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
    assert jax.process_count() == num_processes
    for name, config in configs().items():
        state = train_and_evaluate(config, os.path.join(out, name))
        if process_id == 0:
            leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]
            np.savez(os.path.join(out, f"{name}.npz"), *leaves)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
