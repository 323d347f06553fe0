"""What every family's train step shares: train-mode apply, optimisers, and the guarded update.

Families (genjax.families) build their per-device steps `(state, batch, key) -> (state,
metrics)` from these. Steps know nothing of files or flags. They are written pmap style:
gradients, losses and BatchNorm statistics are averaged over the 'data' axis, and
per-example noise is drawn for the global batch and sliced (genjax.parallel), so a step on
N devices equals a step on one device with the whole batch.

A batch holds `R` real batches of `b` local examples, shape (R, b, ...), R being the
family's `data_per_step` (gan.n_critic for GANs: a fresh real batch per critic update).
The loop wraps every step in `guard_nonfinite`, which records updates the step did not
apply because a loss or gradient was not finite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

# Besides its family's metrics, every step returns SKIPPED: the updates it did not apply (int32).
SKIPPED = "skipped"


def _variables(params, stats) -> dict:
    return {"params": params, "batch_stats": stats}


def apply_train(module: nn.Module, params, stats, *inputs, **options):
    """Applies a module in train mode (keyword `options` passed on); returns (output, updated
    batch stats)."""
    out, updates = module.apply(
        _variables(params, stats), *inputs, train=True, mutable=["batch_stats"], **options
    )
    return out, updates.get("batch_stats", stats)


def init_variables(module: nn.Module, key, *inputs, **options) -> tuple[Any, Any]:
    """(params, batch_stats) of a module initialised in eval mode on `inputs` (keyword
    `options` passed on, e.g. a conditional module's labels)."""
    variables = module.init(key, *inputs, train=False, **options)
    return variables["params"], variables.get("batch_stats", {})


def learning_rate(config, lr: float, updates_per_step: int = 1) -> optax.Schedule:
    """`lr`, constant until `optim.decay_from` of the run, then linearly down to 0.

    Always a schedule (constant when decay_from = 1), so the optimiser state has one shape.
    """
    total = config.num_steps * updates_per_step
    start = min(total, int(config.optim.decay_from * total))
    if start >= total:
        return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, total - start)], [start]
    )


def optimizer(config, lr: float, updates_per_step: int = 1) -> optax.GradientTransformation:
    """Adam (b1, b2) or plain SGD, by `optim.name`, at the scheduled learning rate."""
    schedule = learning_rate(config, lr, updates_per_step)
    if config.optim.name == "sgd":
        return optax.sgd(schedule)
    return optax.adam(schedule, b1=config.optim.b1, b2=config.optim.b2)


def all_finite(*trees) -> jax.Array:
    """Whether every float in the pytrees is finite (a bool scalar)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(trees)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def apply_if_finite(tx, grads, loss: jax.Array, params, opt_state, new_stats, old_stats):
    """One optimiser update, applied only if the (all-reduced) loss and gradients are finite.

    Returns (params, opt_state, stats, ok): the updated params and optimiser state and
    `new_stats` (BatchNorm statistics of the forward pass) if ok, else the old ones unchanged
    (vdvae's and optax.apply_if_finite's remedy for a rare NaN/Inf). The decision depends on
    the gradients, not on the new parameters, and is taken by `lax.cond` around the update:
    an elementwise `where(ok, new, old)` over parameters and optimiser state made XLA:CPU
    copy the Adam moments of the large kernels every step (seen in the optimised HLO).
    `loss` must be the same on every device.
    """
    ok = all_finite(grads, loss)

    def update(operands):
        grads, opt_state, params, stats, _ = operands
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, stats

    def keep(operands):
        _, opt_state, params, _, stats = operands
        return params, opt_state, stats

    operands = (grads, opt_state, params, new_stats, old_stats)
    params, opt_state, stats = lax.cond(ok, update, keep, operands)
    return params, opt_state, stats, ok


# ------------------------------------------------------------ non-finite guard


@struct.dataclass
class TrainState:
    """The model's state plus the loop's guard against non-finite updates."""

    model: Any  # the family's state
    skipped: jax.Array  # updates skipped because a loss or gradient was not finite
    nonfinite_step: jax.Array  # the first such step, -1 if none
    nonfinite_values: jax.Array  # the family's metrics (in family.metrics order) at that step


def new_train_state(model_state, metric_names: tuple[str, ...]) -> TrainState:
    """A TrainState around a family's model state; `metric_names` are the family's metrics."""
    return TrainState(
        model=model_state,
        skipped=jnp.zeros((), jnp.int32),
        nonfinite_step=jnp.full((), -1, jnp.int32),
        nonfinite_values=jnp.zeros((len(metric_names),), jnp.float32),
    )


def guard_nonfinite(step: Callable, metric_names: tuple[str, ...]) -> Callable:
    """Wraps a model step with the loop's record of non-finite updates.

    The step itself never applies an update whose loss or gradients are not finite
    (`apply_if_finite`); this wrapper counts the skipped updates and records the first step
    that had one, with its metrics, for the loop: under nonfinite='stop' train.py raises
    Diverged at the next log or checkpoint step, before saving, so the newest checkpoint is
    the last good one; under 'skip' it goes on (vdvae's remedy). A finite gradient that the
    optimiser turns into a non-finite parameter (an absurd learning rate) shows one step
    later, as a non-finite loss.
    """
    names = tuple(metric_names)

    def guarded(ts: TrainState, batch, key):
        model, metrics = step(ts.model, batch, key)
        metrics = dict(metrics)
        skipped = metrics.pop(SKIPPED)
        assert tuple(sorted(metrics)) == names, (sorted(metrics), names)
        first = (skipped > 0) & (ts.nonfinite_step < 0)
        values = jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in names])
        ts = TrainState(
            model=model,
            skipped=ts.skipped + skipped,
            nonfinite_step=jnp.where(first, ts.model.step, ts.nonfinite_step),
            nonfinite_values=jnp.where(first, values, ts.nonfinite_values),
        )
        return ts, metrics | {"skipped_updates": ts.skipped}

    return guarded
