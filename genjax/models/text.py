"""Recurrent networks for token sequences: the sequence VAE of Bowman et al. (2016) and its
language-model baseline (the same decoder without z).

The GRU (Cho et al. 2014) is written out in PyTorch's formulation (`torch.nn.GRU`: the reset
gate multiplies the recurrent projection, both projections carry a bias), so a PyTorch GRU
with the same weights computes the same states (tests/test_text.py). The input projections
of all steps are one matrix product before the recurrence, which then runs in `lax.scan`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from genjax.config import ConfigError
from genjax.data.text import BOS_ID, PAD_ID


def gru_cell(h, gates_x, w_h, b_h):
    """One GRU step: h (B, H), gates_x = x W_i + b_i (B, 3H) in PyTorch's order (r, z, n)."""
    gates_h = h @ w_h + b_h
    x_r, x_z, x_n = jnp.split(gates_x, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gates_h, 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return (1.0 - z) * n + z * h


class RecurrentLayer(nn.Module):
    """A one-layer GRU over `features`-wide inputs: params w_i (D, 3H), b_i, w_h (H, 3H), b_h,
    float32, initialised as torch.nn.GRU does (U(-1/sqrt(H), 1/sqrt(H)))."""

    features: int
    hidden: int
    dtype: Any = jnp.float32

    def setup(self):
        h = self.hidden
        bound = 1.0 / h**0.5

        def init(key, shape):
            return jax.random.uniform(key, shape, jnp.float32, -bound, bound)

        self.w_i = self.param("w_i", init, (self.features, 3 * h))
        self.b_i = self.param("b_i", init, (3 * h,))
        self.w_h = self.param("w_h", init, (h, 3 * h))
        self.b_h = self.param("b_h", init, (3 * h,))

    def input_gates(self, x):
        """x W_i + b_i for inputs (..., D) -> (..., 3H), one matrix product for all steps."""
        return x.astype(self.dtype) @ self.w_i.astype(self.dtype) + self.b_i.astype(self.dtype)

    def step(self, h, gates_x):
        """One step from the state h (B, H) and input gates (B, 3H)."""
        c = lambda a: a.astype(self.dtype)  # noqa: E731
        return gru_cell(c(h), c(gates_x), c(self.w_h), c(self.b_h))

    def __call__(self, x, h0, mask=None):
        """Every state (B, T, H) of the GRU over x (B, T, D) from h0 (B, H); where `mask`
        (B, T) is False the state is carried unchanged (the last state is then that of the
        last real step)."""
        gates = self.input_gates(x)
        w_h, b_h = self.w_h.astype(self.dtype), self.b_h.astype(self.dtype)
        if mask is None:
            mask = jnp.ones(x.shape[:2], bool)

        def body(h, inputs):
            g, m = inputs
            new = jnp.where(m[:, None], gru_cell(h, g, w_h, b_h), h)
            return new, new

        _, states = lax.scan(body, h0.astype(self.dtype), (gates.swapaxes(0, 1), mask.T))
        return states.swapaxes(0, 1)


class TextEncoder(nn.Module):
    """q(z|x): embeddings -> GRU -> its last state -> (mean, log-variance) of z (Bowman et al.
    2016, sec. 3). `tokens` (B, T) are words, <eos>, <pad>; <pad> steps are skipped."""

    vocab_size: int
    embed_dim: int
    hidden: int
    z_dim: int
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, tokens, train: bool = False):
        mask = tokens != PAD_ID
        x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="embed")(tokens)
        h0 = jnp.zeros((tokens.shape[0], self.hidden), self.dtype)
        gru = RecurrentLayer(self.embed_dim, self.hidden, self.dtype, name="gru")
        states = gru(x, h0, mask)
        last = states[:, -1].astype(jnp.float32)
        mean = nn.Dense(self.z_dim, dtype=jnp.float32, name="mean")(last)
        logvar = nn.Dense(self.z_dim, dtype=jnp.float32, name="logvar")(last)
        return mean, logvar


def decoder_inputs(tokens):
    """<bos> followed by the sequence without its last position: the decoder's inputs."""
    bos = jnp.full((tokens.shape[0], 1), BOS_ID, tokens.dtype)
    return jnp.concatenate([bos, tokens[:, :-1]], axis=1)


class TextDecoder(nn.Module):
    """p(x|z): a GRU language model whose initial state is tanh(W z + b) and whose every input
    is [embedding of the previous word; z] (Bowman et al. 2016, sec. 3); with z_dim = 0 it
    has no z and starts from zeros (the language-model baseline)."""

    vocab_size: int
    embed_dim: int
    hidden: int
    z_dim: int
    dtype: Any = jnp.float32
    axis_name: str | None = None

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype)
        self.gru = RecurrentLayer(self.embed_dim + self.z_dim, self.hidden, self.dtype)
        self.out = nn.Dense(self.vocab_size, dtype=self.dtype)
        if self.z_dim:
            self.to_state = nn.Dense(self.hidden, dtype=self.dtype)

    def _inputs(self, z, prev):
        """[embedding of `prev` (B, T) tokens; z] (B, T, E + Z)."""
        e = self.embed(prev)
        if not self.z_dim:
            return e
        zz = jnp.broadcast_to(z[:, None, :].astype(e.dtype), (*prev.shape, self.z_dim))
        return jnp.concatenate([e, zz], axis=-1)

    def initial_state(self, z, batch: int):
        if not self.z_dim:
            return jnp.zeros((batch, self.hidden), self.dtype)
        return jnp.tanh(self.to_state(z.astype(self.dtype)))

    def __call__(self, z, prev, train: bool = False):
        """Logits (B, T, V) of each next token given z and the previous tokens `prev` (B, T)
        (<bos>, then the sequence shifted right; word dropout is applied by the caller)."""
        h0 = self.initial_state(z, prev.shape[0])
        states = self.gru(self._inputs(z, prev), h0)
        return self.out(states).astype(jnp.float32)

    def start(self, z, batch: int):
        """The state before the first token."""
        return self.initial_state(z, batch)

    def next_logits(self, z, h, prev):
        """One decoding step: (new state, logits (B, V)) after the previous token (B,)."""
        x = self._inputs(z, prev[:, None])[:, 0]
        gates = self.gru.input_gates(x)
        h = self.gru.step(h, gates)
        return h, self.out(h).astype(jnp.float32)


def generate(decoder: TextDecoder, variables, z, key, max_len: int, temperature: float, batch):
    """Token rows (B, max_len) drawn one token at a time from p(x|z) at `temperature` (0 =
    greedy, argmax); after <eos> every position is <pad>."""
    from genjax.data.text import EOS_ID

    h = decoder.apply(variables, z, batch, method=TextDecoder.start)

    def body(carry, step_key):
        h, prev, done = carry
        h, logits = decoder.apply(variables, z, h, prev, method=TextDecoder.next_logits)
        logits = logits.at[:, PAD_ID].set(-jnp.inf).at[:, BOS_ID].set(-jnp.inf)
        if temperature > 0:
            token = jax.random.categorical(step_key, logits / temperature, axis=-1)
        else:
            token = jnp.argmax(logits, axis=-1)
        token = jnp.where(done, PAD_ID, token).astype(jnp.int32)
        done = done | (token == EOS_ID)
        return (h, token, done), token

    start = (h, jnp.full((batch,), BOS_ID, jnp.int32), jnp.zeros((batch,), bool))
    _, tokens = lax.scan(body, start, jax.random.split(key, max_len))
    return tokens.T


def _sequence_shape(config, shape) -> int:
    """max_len of token data (max_len,), else a ConfigError saying what the model takes."""
    if len(shape) != 1:
        raise ConfigError(
            f"model {config.model.name!r} takes token sequences (max_len,); got examples of "
            f"shape {tuple(shape)}; valid data: pydocs, text:FILE|DIR, tfds:NAME:FIELD"
        )
    for key in ("hidden", "embed_dim") + (("z_dim",) if "z_dim" in config.model else ()):
        if config.model[key] is not None and config.model[key] < 1:
            raise ConfigError(f"config.model.{key} must be >= 1, got {config.model[key]}")
    return shape[0]


def build_vae(config, shape, **common):
    """(TextEncoder, TextDecoder) of the sequence VAE over data.vocab_size tokens."""
    _sequence_shape(config, shape)
    m, v = config.model, config.data.vocab_size
    return (
        TextEncoder(v, m.embed_dim, m.hidden, m.z_dim, **common),
        TextDecoder(v, m.embed_dim, m.hidden, m.z_dim, **common),
    )


def build_lm(config, shape, **common):
    """(TextDecoder without z,): the language-model baseline."""
    _sequence_shape(config, shape)
    m = config.model
    return (TextDecoder(config.data.vocab_size, m.embed_dim, m.hidden, 0, **common),)
