"""The FID Inception-v3 in Flax: 2048-d pool3 features for FID, KID, precision/recall (Heusel 2017).

The network is pytorch-fid's `InceptionV3` with `use_fid_inception=True` (Seitzer 2020): the
Inception-v3 of Szegedy et al. (2016) with the patched blocks of TensorFlow's FID graph
(FIDInceptionA / C: average pools that do not count padding; FIDInceptionE_1 likewise;
FIDInceptionE_2: a max pool in the pool branch). Input images in [0, 1] (NHWC, grey or RGB)
are resized to 299 x 299 bilinearly (half-pixel centres, no antialiasing: torch's
`interpolate(..., 'bilinear', align_corners=False)`), scaled to [-1, 1], and run to the final
average pool.

Weights are never downloaded. Give a local file with `--inception_weights PATH`:

- `pt_inception-2015-12-05-6726825d.pth`, pytorch-fid's port of the TensorFlow FID weights
  (https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/
  pt_inception-2015-12-05-6726825d.pth), converted once to .npz with

      python -m genjax.metrics.inception --convert pt_inception-2015-12-05-6726825d.pth \\
          fid_inception.npz

  (the converter needs PyTorch; any machine with it will do). A .pth path is also read
  directly when PyTorch is installed.
- The .npz format: one float32 array per tensor of the torch state dict, under its torch
  name and layout: `Conv2d_1a_3x3.conv.weight` (O, I, kH, kW), `Mixed_5b.branch1x1.bn.weight`,
  `.bn.bias`, `.bn.running_mean`, `.bn.running_var` (C,) for each of the 94 BasicConv2d layers
  (`fc.*` and `num_batches_tracked` are ignored). BatchNorm epsilon is 1e-3.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax.config import ConfigError

SIZE = 299
FEATURES = 2048


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU: torchvision's block."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            strides=self.stride,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def avg_pool_3x3(x):
    """3x3 stride-1 average pool, padding 1, dividing by the unpadded count (TensorFlow's)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3(x, stride: int = 2, pad: int = 0):
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class FIDInceptionA(nn.Module):
    """Mixed_5b/c/d: 1x1, 5x5, double 3x3 and pool branches (35 x 35)."""

    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(64, name="branch1x1")(x)
        b5 = BasicConv2d(48, name="branch5x5_1")(x)
        b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, name="branch_pool")(avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: the 35 -> 17 grid reduction."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, max_pool_3x3(x)], axis=-1)


class FIDInceptionC(nn.Module):
    """Mixed_6b..e: factorised 7x7 branches (17 x 17)."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, name="branch1x1")(x)
        b7 = BasicConv2d(c7, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, name="branch_pool")(avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: the 17 -> 8 grid reduction."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(192, name="branch3x3_1")(x)
        b3 = BasicConv2d(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, max_pool_3x3(x)], axis=-1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (pool 'avg', FIDInceptionE_1) and Mixed_7c (pool 'max', FIDInceptionE_2)."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(320, name="branch1x1")(x)
        b3 = BasicConv2d(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        pooled = avg_pool_3x3(x) if self.pool == "avg" else max_pool_3x3(x, stride=1, pad=1)
        bp = BasicConv2d(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def preprocess(images):
    """[0, 1] images (B, H, W, 1 or 3) -> RGB 299 x 299 in [-1, 1], as pytorch-fid feeds them."""
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (SIZE, SIZE):
        shape = (x.shape[0], SIZE, SIZE, 3)
        x = jax.image.resize(x, shape, method="bilinear", antialias=False)
    return 2.0 * x - 1.0


class FIDInceptionV3(nn.Module):
    """[0, 1] images -> pool3 features (B, 2048), the FID Inception of pytorch-fid."""

    @nn.compact
    def __call__(self, images):
        x = preprocess(images)
        x = BasicConv2d(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = max_pool_3x3(x)
        x = BasicConv2d(80, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = max_pool_3x3(x)
        x = FIDInceptionA(32, name="Mixed_5b")(x)
        x = FIDInceptionA(64, name="Mixed_5c")(x)
        x = FIDInceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = FIDInceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = FIDInceptionE("avg", name="Mixed_7b")(x)
        x = FIDInceptionE("max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def variables_template() -> dict:
    """The shapes of the network's variables ({'params', 'batch_stats'}), without computing."""
    x = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    return jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0), x)


# flax leaf name -> (torch suffix, layout change)
_TORCH_NAMES = {
    ("params", "kernel"): ("weight", lambda w: np.transpose(w, (2, 3, 1, 0))),  # OIHW -> HWIO
    ("params", "scale"): ("weight", None),
    ("params", "bias"): ("bias", None),
    ("batch_stats", "mean"): ("running_mean", None),
    ("batch_stats", "var"): ("running_var", None),
}


def torch_name(collection: str, path: tuple[str, ...]) -> str:
    """The torch state-dict name of a flax variable, e.g. Mixed_5b.branch1x1.conv.weight."""
    return ".".join((*path[:-1], _TORCH_NAMES[(collection, path[-1])][0]))


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Named arrays from an .npz, or from a torch .pth when PyTorch is installed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"inception weights {path}: no such file")
    if path.suffix == ".pth":
        try:
            import torch
        except ImportError:
            raise ConfigError(
                f"inception weights {path}: reading a .pth needs PyTorch; convert it once "
                "with `python -m genjax.metrics.inception --convert IN.pth OUT.npz` on a machine "
                "that has it, and pass the .npz"
            ) from None
        try:
            state = torch.load(path, map_location="cpu")
            return {k: v.detach().cpu().numpy() for k, v in state.items()}
        except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
            raise ConfigError(f"inception weights {path}: not a torch state dict ({e})") from None
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ConfigError(f"inception weights {path}: not an .npz of named arrays ({e})") from None


def load_variables(path) -> dict:
    """The FID Inception's flax variables from a weights file (see the module docstring)."""
    return variables_from_arrays(read_state_dict(path), path)


def cached_variables(path) -> dict:
    """`load_variables`, read once per process for each (file, modification time)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"inception weights {path}: no such file")
    return _cached_variables(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _cached_variables(path: str, mtime_ns: int) -> dict:
    return load_variables(path)


def variables_from_arrays(arrays: dict[str, np.ndarray], path="weights") -> dict:
    """Flax variables from torch-named arrays; ConfigError naming a missing or misshapen one."""
    template = variables_template()
    out: dict = {}
    for collection, tree in template.items():
        flat = {}
        for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            names = tuple(k.key for k in key_path)
            name = torch_name(collection, names)
            if name not in arrays:
                raise ConfigError(
                    f"inception weights {path}: no array {name!r}; is it the FID net?"
                )
            change = _TORCH_NAMES[(collection, names[-1])][1]
            value = np.asarray(arrays[name], np.float32)
            value = change(value) if change else value
            if value.shape != leaf.shape:
                raise ConfigError(
                    f"inception weights {path}: {name} has shape {value.shape}, expected "
                    f"{leaf.shape} (after the layout change)"
                )
            flat[names] = jnp.asarray(value)
        out[collection] = _unflatten(flat)
    return out


def _unflatten(flat: dict[tuple, object]) -> dict:
    tree: dict = {}
    for names, value in flat.items():
        node = tree
        for name in names[:-1]:
            node = node.setdefault(name, {})
        node[names[-1]] = value
    return tree


@functools.cache
def _apply() -> object:
    return jax.jit(FIDInceptionV3().apply)


def inception_features(variables, images_uint8, batch_size: int = 100) -> np.ndarray:
    """pool3 features (N, 2048) of uint8 images, `batch_size` at a time (the last one padded)."""
    images = np.asarray(images_uint8)
    apply, out = _apply(), []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        real = len(batch)
        if real < batch_size:
            pad = np.zeros((batch_size - real, *images.shape[1:]), images.dtype)
            batch = np.concatenate([batch, pad])
        x = jnp.asarray(batch, jnp.float32) / 255.0
        out.append(np.asarray(apply(variables, x))[:real])
    return np.concatenate(out).astype(np.float64)


def convert(source, target) -> Path:
    """Writes a torch FID Inception state dict (.pth) as an .npz of named float32 arrays."""
    source, target = Path(source), Path(target)
    if source.suffix != ".pth":
        raise ConfigError(f"--convert {source}: expected a PyTorch .pth file")
    if target.suffix != ".npz":
        raise ConfigError(f"--convert ... {target}: the output must end in .npz")
    arrays = read_state_dict(source)
    kept = {k: v.astype(np.float32) for k, v in arrays.items() if "num_batches_tracked" not in k}
    variables_from_arrays(kept, source)  # refuses a state dict that is not the FID Inception
    np.savez(target, **kept)
    return target


def main(argv: list[str]) -> None:
    """python -m genjax.metrics.inception --convert IN.pth OUT.npz"""
    from genjax import cli

    if len(argv) != 3 or argv[0] != "--convert":
        cli.fail("usage: python -m genjax.metrics.inception --convert IN.pth OUT.npz")
    cli.run_or_exit(lambda: print(convert(argv[1], argv[2])))


if __name__ == "__main__":
    main(sys.argv[1:])
