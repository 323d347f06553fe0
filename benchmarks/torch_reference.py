"""The genjax models, losses and Adam in PyTorch eager: the baseline throughput.py compares to.

Same layers, widths, norms and activations as genjax/models (NCHW, PyTorch's default layout;
init does not matter for speed), the same step: GAN = n_critic discriminator updates on fresh
real batches + one generator update; VAE = negative ELBO with the reparameterised z and
analytic KL. Batches are drawn on the device from the data set, as with data.on_device.
Compute dtype = config.dtype (autocast unless float32); on CUDA, float32 matmuls and
convolutions run in TF32 or IEEE float32 as the caller says (throughput.py: as JAX runs them).
Threads = the machine's cores. Needs the [bench] extra (torch==2.13.0).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genjax.families import GAN
from genjax.models.layers import square_levels
from genjax.models.registry import family_of

LOG_2PI = math.log(2 * math.pi)


def _bn(channels: int, dims: int) -> nn.Module:  # flax momentum 0.9 = torch momentum 0.1
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels, momentum=0.1, eps=1e-5)


def _up(cin: int, cout: int, bias: bool = True) -> nn.Module:  # 4x4 stride 2 'SAME'
    return nn.ConvTranspose2d(cin, cout, 4, 2, padding=1, bias=bias)


def _down(cin: int, cout: int, bias: bool = True) -> nn.Module:
    return nn.Conv2d(cin, cout, 4, 2, padding=1, bias=bias)


class Reshape(nn.Module):
    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def dcgan(cfg, shape):
    """(generator, discriminator) of genjax.models.gan.DCGAN*."""
    side, _, channels = shape
    s0, n = square_levels(side)
    width = cfg.features * 2 ** (n - 1)
    g = [nn.Linear(cfg.z_dim, s0 * s0 * width, bias=False), Reshape(width, s0, s0)]
    g += [_bn(width, 2), nn.ReLU()]
    for i in range(1, n):
        g += [_up(width // 2 ** (i - 1), width // 2**i, False), _bn(width // 2**i, 2), nn.ReLU()]
    g += [_up(width // 2 ** (n - 1), channels), nn.Tanh()]
    d, cin = [], channels
    for i in range(n):
        cout = cfg.features * 2**i
        normed = i > 0 and cfg.d_norm != "none"
        d.append(_down(cin, cout, bias=not (normed and cfg.d_norm == "batch")))
        if normed:  # GroupNorm(1) = LayerNorm over (C, H, W) with per-channel affine, as flax
            d.append(_bn(cout, 2) if cfg.d_norm == "batch" else nn.GroupNorm(1, cout))
        d.append(nn.LeakyReLU(0.2))
        cin = cout
    d += [nn.Flatten(), nn.Linear(cin * (side // 2**n) ** 2, 1)]
    return nn.Sequential(*g), nn.Sequential(*d)


def gan_mlp(cfg, shape, hidden_layers=1, slope_g=0.01, slope_d=0.01, squash=True):
    """(generator, discriminator) of genjax.models.gan.MLP* (gan_mlp and toy_mlp)."""
    size = math.prod(shape)
    g, width = [], cfg.z_dim
    for _ in range(hidden_layers):
        g += [nn.Linear(width, cfg.hidden), nn.LeakyReLU(slope_g)]
        width = cfg.hidden
    g += [nn.Linear(width, size)] + ([nn.Tanh()] if squash else []) + [Reshape(*_nchw(shape))]
    d, width = [nn.Flatten()], size
    for _ in range(hidden_layers):
        d += [nn.Linear(width, cfg.hidden), nn.LeakyReLU(slope_d)]
        width = cfg.hidden
    return nn.Sequential(*g), nn.Sequential(*d, nn.Linear(width, 1))


class Encoder(nn.Module):
    """genjax.models.vae.MLPEncoder / ConvEncoder: body, then mean and logvar heads."""

    def __init__(self, body: nn.Module, width: int, z_dim: int):
        super().__init__()
        self.body, self.mean, self.logvar = body, nn.Linear(width, z_dim), nn.Linear(width, z_dim)

    def forward(self, x):
        h = self.body(x)
        return self.mean(h), self.logvar(h)


def vae(cfg, shape, k):
    """(encoder, decoder) of genjax.models.vae for 'vae_mlp' and 'vae_conv'."""
    side, _, channels = shape
    if cfg.name == "vae_mlp":
        body, width = [nn.Flatten()], math.prod(shape)
        dec, zw = [], cfg.z_dim
        for _ in range(cfg.depth):
            body += [nn.Linear(width, cfg.hidden), nn.ReLU()]
            dec += [nn.Linear(zw, cfg.hidden), nn.ReLU()]
            width = zw = cfg.hidden
        dec += [nn.Linear(zw, math.prod(shape) * k), Reshape(channels * k, side, shape[1])]
        return Encoder(nn.Sequential(*body), width, cfg.z_dim), nn.Sequential(*dec)
    f = cfg.features
    body = [_down(channels, f), nn.ReLU(), _down(f, 2 * f), nn.ReLU(), nn.Flatten()]
    width = 2 * f * math.ceil(side / 4) ** 2
    s0, n = square_levels(side)
    top = f * 2 ** (n - 1)
    dec = [nn.Linear(cfg.z_dim, s0 * s0 * top), Reshape(top, s0, s0), nn.ReLU()]
    for i in range(1, n):
        dec += [_up(top // 2 ** (i - 1), top // 2**i), nn.ReLU()]
    dec += [_up(top // 2 ** (n - 1), channels * k)]
    return Encoder(nn.Sequential(*body), width, cfg.z_dim), nn.Sequential(*dec)


class AutoregressiveDecoder(nn.Module):
    """genjax.models.vae.AutoregressiveDecoder: base(z) + a 1-hidden-layer network of each
    pixel's earlier neighbours in a kernel x kernel window (type-A causal context)."""

    def __init__(self, base: nn.Module, channels: int, k: int, kernel: int, hidden: int):
        super().__init__()
        r = kernel // 2
        self.base, self.r = base, r
        self.offsets = [
            (dy, dx) for dy in range(-r, 1) for dx in range(-r, r + 1) if dy < 0 or dx < 0
        ]
        self.hidden = nn.Conv2d(len(self.offsets) * channels, hidden, 1)
        self.out = nn.Conv2d(hidden, channels * k, 1)

    def forward(self, z, x):
        r, (h, w) = self.r, x.shape[2:]
        padded = F.pad(x, (r, r, r, r))
        context = torch.cat(
            [padded[:, :, r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in self.offsets], 1
        )
        return self.base(z) + self.out(F.relu(self.hidden(context)))


def pack(x, m: int):
    """PacGAN packing, as genjax.steps.pack but channels-first: (B, C, ...) -> (B/m, mC, ...)."""
    return x if m == 1 else x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])


def _nchw(shape):
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape


def build(config, shape):
    """The torch modules of config.model.name for data of `shape` (genjax's registry)."""
    cfg = config.model
    if cfg.name == "dcgan":
        return dcgan(cfg, shape)
    if cfg.name == "gan_mlp":
        return gan_mlp(cfg, shape)
    if cfg.name == "toy_mlp":
        return gan_mlp(cfg, shape, cfg.depth, 0.0, 0.2, squash=False)
    k = 2 if config.vae.likelihood == "gaussian" else 1
    encoder, decoder = vae(cfg, shape, k)
    if cfg.ar_kernel:
        decoder = AutoregressiveDecoder(decoder, shape[-1], k, cfg.ar_kernel, cfg.ar_hidden)
    return encoder, decoder


def is_gan(config) -> bool:
    """Whether config (resolved) trains a GAN, by its model's family in genjax's registry."""
    return family_of(config.model.name) is GAN


def networks(config, shape):
    """(generator, discriminator) or (encoder, decoder) as the step trains them: with PacGAN
    packing (gan.pack m > 1) the discriminator sees m examples stacked along the channels."""
    first, second = build(config, shape)
    m = config.gan.pack if is_gan(config) else 1
    if m > 1:
        second = build(config, (*shape[:-1], m * shape[-1]))[1]
    return first, second


GAN_LOSSES = {  # (discriminator loss, generator loss) from logits, as genjax.objectives
    "nonsaturating": (
        lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
        lambda f: F.softplus(-f).mean(),
    ),
    "minimax": (
        lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
        lambda f: -F.softplus(f).mean(),
    ),
    "hinge": (lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(), lambda f: -f.mean()),
    "wgan_gp": (lambda r, f: f.mean() - r.mean(), lambda f: -f.mean()),
}


def gradient_penalty(critic, real, fake, weight):
    eps = torch.rand(real.shape[0], *[1] * (real.ndim - 1), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    norms = torch.sqrt(grad.flatten(1).square().sum(1) + 1e-12)
    return weight * (norms - 1).square().mean()


def _adam(params, config, lr):
    """Adam (optax's defaults: eps 1e-8) or SGD, by optim.name; no schedule (same cost)."""
    if config.optim.get("name", "adam") == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=(config.optim.b1, config.optim.b2), eps=1e-8)


def make_call(
    config, arrays: dict, steps: int, device: str = "cpu", threads: int = 0, tf32: bool = False
):
    """A function running `steps` PyTorch train steps of `config` and waiting for them.

    `threads`: torch's intra-op threads; 0 = the cores this process may use. `tf32`: on CUDA,
    float32 matmuls and cuDNN convolutions in TF32 (as JAX's default precision on GPU), else
    IEEE float32 (torch's default matmul precision, 'highest'; its cuDNN default is TF32).
    """
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    if device.startswith("cuda"):  # torch's legacy switches only: mixing in the new ones raises
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = tf32
    kind = "point" if "point" in arrays else "image"
    raw = torch.from_numpy(np.array(arrays[kind])).to(device)  # a writable copy
    shape = tuple(raw.shape[1:])
    data = raw.permute(0, 3, 1, 2).contiguous() if kind == "image" else raw
    first, second = (net.to(device).train() for net in networks(config, shape))
    compute_dtype = getattr(torch, config.dtype)  # genjax.config.DTYPES are torch names too
    autocast = torch.autocast(device.split(":")[0], compute_dtype, compute_dtype != torch.float32)
    gan = is_gan(config)
    b, m = config.batch_size, config.gan.pack if gan else 1
    ar = bool(config.model.ar_kernel)
    if gan:
        g_opt = _adam(first.parameters(), config, config.optim.lr)
        d_opt = _adam(second.parameters(), config, config.gan.d_lr or config.optim.lr)
        d_loss_fn, g_loss_fn = GAN_LOSSES[config.gan.loss]
    else:
        opt = _adam([*first.parameters(), *second.parameters()], config, config.optim.lr)

    def batch(scale):
        x = data[torch.randint(len(data), (b,), device=device)].float()
        return x if kind == "point" else x * (2 / 255) - 1 if scale == "gan" else x / 255

    def gan_step():
        generator, discriminator = first, second
        for _ in range(config.gan.n_critic):
            real = batch("gan")
            with torch.no_grad(), autocast:
                fake = generator(torch.randn(b, config.model.z_dim, device=device)).float()
            d_opt.zero_grad(set_to_none=True)
            real, fake = pack(real, m), pack(fake, m)
            with autocast:
                loss = d_loss_fn(discriminator(real).float(), discriminator(fake).float())
                if config.gan.loss == "wgan_gp":
                    loss = loss + gradient_penalty(discriminator, real, fake, config.gan.gp_weight)
            loss.backward()
            d_opt.step()
        discriminator.requires_grad_(False)
        g_opt.zero_grad(set_to_none=True)
        with autocast:
            fake = generator(torch.randn(b, config.model.z_dim, device=device)).float()
            g_loss_fn(discriminator(pack(fake, m)).float()).backward()
        g_opt.step()
        discriminator.requires_grad_(True)

    def vae_step():
        encoder, decoder = first, second
        x = batch("vae")
        if config.vae.binarize and config.vae.likelihood == "bernoulli":
            x = (torch.rand_like(x) < x).float()
        opt.zero_grad(set_to_none=True)
        with autocast:
            mean, logvar = (t.float() for t in encoder(x))
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            out = (decoder(z, x) if ar else decoder(z)).float()
        if config.vae.likelihood == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        else:
            mu, log_std = out.chunk(2, dim=1)
            z_score = (x - mu) * torch.exp(-log_std)
            recon = (0.5 * z_score.square() + log_std + 0.5 * LOG_2PI).flatten(1).sum(1)
        kl = 0.5 * (logvar.exp() + mean.square() - 1 - logvar).sum(1)
        (recon + config.vae.beta * kl).mean().backward()
        opt.step()

    step = gan_step if gan else vae_step

    def call():
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return call


def count_flops(call) -> int:
    """FLOPs of one `call()` by torch's own counter (torch.utils.flop_counter): the
    convolutions and matmuls of the forward and backward passes; elementwise work (norms,
    activations, losses, Adam) is not counted: the work of these layers computed directly
    (no Winograd or FFT convolutions), with nothing wasted."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()
