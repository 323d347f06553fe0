"""The genjax models, losses and Adam in PyTorch eager: the baseline throughput.py compares to.

Same layers, widths, norms and activations as genjax/models (NCHW, PyTorch's default layout;
init does not matter for speed), the same step: GAN = n_critic discriminator updates on fresh
real batches + one generator update; VAE = negative ELBO with the reparameterised z and
analytic KL; sequence VAE and language model (genjax.families.text) = teacher-forced token
cross-entropy over every max_len position (+ the sequence VAE's KL term). Batches are drawn on
the device from the data set, as with data.on_device. A class-conditional GAN (cdcgan) reads
the real examples' labels with them and draws each generated example's class uniformly, G and
D both seeing it, as genjax.families.gan does; a class-conditional VAE (cvae_mlp) reads them
into its encoder and decoder, as genjax.families.vae does.
Spectral norm (sngan_resnet's D, d_norm='spectral') is torch's parametrization: one power
iteration per forward pass in training, as genjax's nn.SpectralNorm runs one per call.
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

from genjax.data.text import BOS_ID, PAD_ID, UNK_ID
from genjax.families import GAN
from genjax.models.layers import square_levels
from genjax.models.registry import family_of

LOG_2PI = math.log(2 * math.pi)


def _bn(channels: int, dims: int, affine: bool = True) -> nn.Module:  # flax 0.9 = torch 0.1
    batch_norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    return batch_norm(channels, momentum=0.1, eps=1e-5, affine=affine)


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


def spectral(module: nn.Module) -> nn.Module:
    """`module` with its weight spectrally normalised (Miyato et al. 2018): torch's
    parametrization, one power iteration per forward pass in training mode."""
    return nn.utils.parametrizations.spectral_norm(module)


class ConditionalBatchNorm(nn.Module):
    """genjax.models.layers.ConditionalBatchNorm: BatchNorm without its own scale and shift,
    then * gamma[y] + beta[y], one row per class (initialised to 1 and 0)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = _bn(channels, 2, affine=False)
        self.gamma, self.beta = (
            nn.Embedding(num_classes, channels),
            nn.Embedding(num_classes, channels),
        )
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x, labels):
        scale, shift = self.gamma(labels)[:, :, None, None], self.beta(labels)[:, :, None, None]
        return self.norm(x) * scale + shift


class OneHotInput(nn.Module):
    """z -> [z, one_hot(y)]: genjax's cdcgan generator input (Mirza & Osindero 2014)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, z, labels):
        return torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], 1)


class Conditional(nn.Sequential):
    """nn.Sequential whose forward(x, labels) hands the labels to the layers that take them."""

    def forward(self, x, labels):
        for layer in self:
            takes = isinstance(layer, ConditionalBatchNorm | OneHotInput)
            x = layer(x, labels) if takes else layer(x)
        return x


class Projection(nn.Module):
    """Projection discriminator (Miyato & Koyama 2018, eq. 3), genjax's cdcgan D: phi = the
    flattened features `body(x)`, logit = linear(phi) + <embed(y), phi>."""

    def __init__(self, body: nn.Module, linear: nn.Module, embed: nn.Module):
        super().__init__()
        self.body, self.linear, self.embed = body, linear, embed

    def forward(self, x, labels):
        phi = self.body(x)
        return self.linear(phi) + (self.embed(labels) * phi).sum(1, keepdim=True)


def dcgan(cfg, shape, num_classes: int = 0):
    """(generator, discriminator) of genjax.models.gan.DCGAN*; with `num_classes` (cdcgan)
    a one-hot class beside z and conditional BatchNorm in G, and a projection D."""
    side, _, channels = shape
    s0, n = square_levels(side)
    width = cfg.features * 2 ** (n - 1)

    def norm(c: int) -> nn.Module:
        return ConditionalBatchNorm(c, num_classes) if num_classes else _bn(c, 2)

    g = [OneHotInput(num_classes)] if num_classes else []
    g += [nn.Linear(cfg.z_dim + num_classes, s0 * s0 * width, bias=False), Reshape(width, s0, s0)]
    g += [norm(width), nn.ReLU()]
    for i in range(1, n):
        g += [_up(width // 2 ** (i - 1), width // 2**i, False), norm(width // 2**i), nn.ReLU()]
    g += [_up(width // 2 ** (n - 1), channels), nn.Tanh()]
    sn = spectral if cfg.d_norm == "spectral" else (lambda module: module)
    d, cin = [], channels
    for i in range(n):
        cout = cfg.features * 2**i
        normed = i > 0 and cfg.d_norm in ("batch", "layer")
        d.append(sn(_down(cin, cout, bias=not (normed and cfg.d_norm == "batch"))))
        if normed:  # GroupNorm(1) = LayerNorm over (C, H, W) with per-channel affine, as flax
            d.append(_bn(cout, 2) if cfg.d_norm == "batch" else nn.GroupNorm(1, cout))
        d.append(nn.LeakyReLU(0.2))
        cin = cout
    features = cin * (side // 2**n) ** 2
    d += [nn.Flatten()]
    if not num_classes:
        return nn.Sequential(*g), nn.Sequential(*d, sn(nn.Linear(features, 1)))
    embed = sn(nn.Embedding(num_classes, features))
    return Conditional(*g), Projection(nn.Sequential(*d), sn(nn.Linear(features, 1)), embed)


def _upsample(x):  # genjax.models.resnet.upsample_bilinear2x
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class GBlock(nn.Module):
    """genjax.models.resnet.GBlock (Mimicry's GBlock): BN, ReLU, up, conv3x3, BN, ReLU,
    conv3x3, plus the shortcut up, conv1x1."""

    def __init__(self, c: int):
        super().__init__()
        self.b1, self.b2 = _bn(c, 2), _bn(c, 2)
        self.c1, self.c2 = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)
        self.c_sc = nn.Conv2d(c, c, 1, 1, 0)

    def forward(self, x):
        h = self.c1(_upsample(F.relu(self.b1(x))))
        h = self.c2(F.relu(self.b2(h)))
        return h + self.c_sc(_upsample(x))


class SNGANGenerator32(nn.Module):
    """genjax.models.resnet.SNGANGenerator32 (Mimicry's SNGANGenerator32): dense to 4 x 4,
    three upsampling GBlocks, BN, ReLU, conv3x3, tanh."""

    def __init__(self, z_dim: int, features: int, channels: int):
        super().__init__()
        self.l1 = nn.Linear(z_dim, 16 * features)
        self.blocks = nn.Sequential(*[GBlock(features) for _ in range(3)])
        self.b5, self.c5 = _bn(features, 2), nn.Conv2d(features, channels, 3, 1, 1)

    def forward(self, z):
        h = self.blocks(self.l1(z).reshape(z.shape[0], -1, 4, 4))
        return torch.tanh(self.c5(F.relu(self.b5(h))))


class DBlock(nn.Module):
    """genjax.models.resnet.DBlock (Mimicry's DBlock and, `optimized`, DBlockOptimized), every
    conv spectrally normalised; the shortcut of a plain block sees relu(x), as Mimicry's
    in-place ReLU makes it."""

    def __init__(self, cin: int, cout: int, downsample: bool = False, optimized: bool = False):
        super().__init__()
        self.downsample, self.optimized = downsample, optimized
        self.c1 = spectral(nn.Conv2d(cin, cout, 3, 1, 1))
        self.c2 = spectral(nn.Conv2d(cout, cout, 3, 1, 1))
        learned = optimized or downsample or cin != cout
        self.c_sc = spectral(nn.Conv2d(cin, cout, 1, 1, 0)) if learned else None

    def forward(self, x):
        if self.optimized:
            h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
            return h + self.c_sc(F.avg_pool2d(x, 2))
        x = F.relu(x)
        h = self.c2(F.relu(self.c1(x)))
        shortcut = x if self.c_sc is None else self.c_sc(x)
        if self.downsample:
            h, shortcut = F.avg_pool2d(h, 2), F.avg_pool2d(shortcut, 2)
        return h + shortcut


class SNGANDiscriminator32(nn.Module):
    """genjax.models.resnet.SNGANDiscriminator32 (Mimicry's SNGANDiscriminator32): an optimized
    and a downsampling DBlock (32 -> 8), two plain ones, ReLU, sum over space, dense."""

    def __init__(self, features: int, channels: int):
        super().__init__()
        f = features
        self.blocks = nn.Sequential(
            DBlock(channels, f, downsample=True, optimized=True),
            DBlock(f, f, downsample=True),
            DBlock(f, f),
            DBlock(f, f),
        )
        self.l5 = spectral(nn.Linear(f, 1))

    def forward(self, x):
        return self.l5(F.relu(self.blocks(x)).sum((2, 3)))


def sngan32(z_dim: int = 128, features: int = 256, d_features: int = 128, channels: int = 3):
    """(generator, discriminator) of genjax.models.resnet (Mimicry's SNGAN-32; its defaults
    hold 4,276,739 and 1,053,825 parameters)."""
    return SNGANGenerator32(z_dim, features, channels), SNGANDiscriminator32(d_features, channels)


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
    """genjax.models.vae.MLPEncoder / ConvEncoder / ConditionalMLPEncoder: body, then mean
    and logvar heads; a conditional body takes the labels after x."""

    def __init__(self, body: nn.Module, width: int, z_dim: int):
        super().__init__()
        self.body, self.mean, self.logvar = body, nn.Linear(width, z_dim), nn.Linear(width, z_dim)

    def forward(self, x, *labels):
        h = self.body(x, *labels)
        return self.mean(h), self.logvar(h)


def vae(cfg, shape, k, num_classes: int = 0):
    """(encoder, decoder) of genjax.models.vae for 'vae_mlp', 'vae_conv' and, with
    `num_classes`, 'cvae_mlp' (ConditionalMLPEncoder / ConditionalMLPDecoder: one-hot labels
    concatenated to the flattened x and to z, Sohn et al. 2015)."""
    side, _, channels = shape
    if cfg.name in ("vae_mlp", "cvae_mlp"):
        labelled = [OneHotInput(num_classes)] if num_classes else []
        body, width = [nn.Flatten(), *labelled], math.prod(shape) + num_classes
        dec, zw = [*labelled], cfg.z_dim + num_classes
        for _ in range(cfg.depth):
            body += [nn.Linear(width, cfg.hidden), nn.ReLU()]
            dec += [nn.Linear(zw, cfg.hidden), nn.ReLU()]
            width = zw = cfg.hidden
        dec += [nn.Linear(zw, math.prod(shape) * k), Reshape(channels * k, side, shape[1])]
        sequential = Conditional if num_classes else nn.Sequential
        return Encoder(sequential(*body), width, cfg.z_dim), sequential(*dec)
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


class TextEncoder(nn.Module):
    """genjax.models.text.TextEncoder: embeddings, a GRU from zeros over all max_len steps,
    the state after each row's last real token, then mean and log-variance heads.

    nn.GRU computes genjax.models.text.gru_cell's equations (PyTorch's formulation, gates in
    the order r, z, n: n = tanh(W_in x + b_in + r * (W_hn h + b_hn))) with the same four
    tensors (weight_ih = w_i.T, weight_hh = w_h.T, bias_ih = b_i, bias_hh = b_h). genjax
    carries the state unchanged over <pad> steps; rows are words, <eos>, then <pad>
    (genjax.data.text), so its last state is this GRU's state at position length - 1 (zeros
    for an all-<pad> row), taken here from the states of every step, all of which both
    compute."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, z_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.gru = nn.GRU(embed_dim, hidden, batch_first=True)
        self.mean, self.logvar = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)

    def forward(self, tokens):
        states, _ = self.gru(self.embed(tokens))
        length = (tokens != PAD_ID).sum(1)
        rows = torch.arange(len(tokens), device=tokens.device)
        last = states[rows, (length - 1).clamp(min=0)] * (length > 0)[:, None]
        return self.mean(last), self.logvar(last)


class TextDecoder(nn.Module):
    """genjax.models.text.TextDecoder: a GRU over [embedding of the previous token; z] from
    tanh(W z + b), then logits over the vocabulary at every step (Bowman et al. 2016, sec. 3);
    with z_dim = 0 (the language model) no z, from zeros. Its GRU is TextEncoder's."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, z_dim: int = 0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.gru = nn.GRU(embed_dim + z_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)
        self.to_state = nn.Linear(z_dim, hidden) if z_dim else None

    def forward(self, z, prev):
        """Logits (B, T, V) of each next token given z (None without) and `prev` (B, T)."""
        x = self.embed(prev)
        if self.to_state is None:
            states, _ = self.gru(x)
        else:
            zz = z[:, None, :].to(x.dtype).expand(-1, prev.shape[1], -1)
            states, _ = self.gru(torch.cat([x, zz], -1), torch.tanh(self.to_state(z))[None])
        return self.out(states)


def text(config):
    """The networks of genjax.models.text as genjax.families.text's network_params splits
    them: (encoder, decoder) of the sequence VAE, (decoder,) of the language model."""
    m, v = config.model, config.data.vocab_size
    if m.name == "text_lm":
        return (TextDecoder(v, m.embed_dim, m.hidden),)
    return TextEncoder(v, m.embed_dim, m.hidden, m.z_dim), TextDecoder(
        v, m.embed_dim, m.hidden, m.z_dim
    )


def pack(x, m: int):
    """PacGAN packing, as genjax.steps.pack but channels-first: (B, C, ...) -> (B/m, mC, ...)."""
    return x if m == 1 else x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])


def _nchw(shape):
    return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape


MODELS = (
    "cdcgan",
    "cvae_mlp",
    "dcgan",
    "gan_mlp",
    "sngan_resnet",
    "text_lm",
    "text_vae",
    "toy_mlp",
    "vae_conv",
    "vae_mlp",
)
TEXT_MODELS = ("text_lm", "text_vae")


def build(config, shape, num_classes: int = 0):
    """The torch modules of config.model.name (one of MODELS) for data of `shape` with
    `num_classes` classes (what genjax's registry builds; the conditional cdcgan and cvae_mlp
    use them): two networks, or the language model's one."""
    cfg = config.model
    if cfg.name not in MODELS:
        raise ValueError(f"no PyTorch reference for model {cfg.name!r}; it has {MODELS}")
    if cfg.name in ("dcgan", "cdcgan"):
        return dcgan(cfg, shape, num_classes if cfg.name == "cdcgan" else 0)
    if cfg.name == "sngan_resnet":
        return sngan32(cfg.z_dim, cfg.features, cfg.d_features, shape[-1])
    if cfg.name == "gan_mlp":
        return gan_mlp(cfg, shape)
    if cfg.name == "toy_mlp":
        return gan_mlp(cfg, shape, cfg.depth, 0.0, 0.2, squash=False)
    if cfg.name in TEXT_MODELS:
        return text(config)
    k = 2 if config.vae.likelihood == "gaussian" else 1
    encoder, decoder = vae(cfg, shape, k, num_classes if cfg.name == "cvae_mlp" else 0)
    if cfg.ar_kernel:
        decoder = AutoregressiveDecoder(decoder, shape[-1], k, cfg.ar_kernel, cfg.ar_hidden)
    return encoder, decoder


def is_gan(config) -> bool:
    """Whether config (resolved) trains a GAN, by its model's family in genjax's registry."""
    return family_of(config.model.name) is GAN


def networks(config, shape, num_classes: int = 0) -> tuple:
    """(generator, discriminator), (encoder, decoder), or the language model's (decoder,), as
    the step trains them and genjax's family's network_params splits them: with PacGAN
    packing (gan.pack m > 1) the discriminator sees m examples stacked along the channels."""
    nets = build(config, shape, num_classes)
    m = config.gan.pack if is_gan(config) else 1
    if m > 1:
        nets = (nets[0], build(config, (*shape[:-1], m * shape[-1]), num_classes)[1])
    return tuple(nets)


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


def gradient_penalty(critic, real, fake, weight, labels: tuple = ()):
    """WGAN-GP's penalty; a conditional critic judges the mixtures as of the real `labels`."""
    eps = torch.rand(real.shape[0], *[1] * (real.ndim - 1), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat, *labels).sum(), x_hat, create_graph=True)
    norms = torch.sqrt(grad.flatten(1).square().sum(1) + 1e-12)
    return weight * (norms - 1).square().mean()


def kl_weight(v, step: int, num_steps: int) -> float:
    """genjax.objectives.kl_weight on the host: vae.beta, reached by a linear warm-up over
    vae.kl_warmup_steps or by vae.kl_cycles cycles (rising over each cycle's first half)."""
    if v.kl_cycles > 0:
        period = max(num_steps / v.kl_cycles, 1.0)
        return v.beta * min(1.0, (step % period) / period / 0.5)
    if v.kl_warmup_steps > 0:
        return v.beta * min(1.0, step / v.kl_warmup_steps)
    return v.beta


def kl_term(v, step: int, num_steps: int, mean, logvar):
    """genjax.families.vae.kl_term: kl_weight times the batch's mean analytic KL, with
    vae.free_bits nats per latent dimension (objectives.free_bits_kl: a dimension whose batch
    mean KL is at most free_bits costs free_bits and gets no gradient)."""
    kl_dims = 0.5 * (logvar.exp() + mean.square() - 1 - logvar)
    if v.free_bits:
        local = kl_dims.mean(0)
        kl = torch.where(local.detach() > v.free_bits, local, v.free_bits).sum()
    else:
        kl = kl_dims.sum(1).mean()
    return kl_weight(v, step, num_steps) * kl


def _adam(params, config, lr):
    """Adam (optax's defaults: eps 1e-8) or SGD, by optim.name; no schedule (same cost)."""
    if config.optim.get("name", "adam") == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.Adam(params, lr=lr, betas=(config.optim.b1, config.optim.b2), eps=1e-8)


def make_call(
    config,
    arrays: dict,
    steps: int,
    device: str = "cpu",
    threads: int = 0,
    tf32: bool = False,
    num_classes: int = 0,
):
    """A function running `steps` PyTorch train steps of `config` and waiting for them.

    `threads`: torch's intra-op threads; 0 = the cores this process may use. `tf32`: on CUDA,
    float32 matmuls and cuDNN convolutions in TF32 (as JAX's default precision on GPU), else
    IEEE float32 (torch's default matmul precision, 'highest'; its cuDNN default is TF32).
    `num_classes` > 0: a class-conditional model, whose real labels are arrays['label'].
    Data: arrays['image'] (uint8 NHWC), arrays['point'] (float) or arrays['tokens'] (int token
    rows, genjax.data.text). The function's `networks` are the networks it trains.
    """
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    if device.startswith("cuda"):  # torch's legacy switches only: mixing in the new ones raises
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cudnn.allow_tf32 = tf32
    kind = next(k for k in ("tokens", "point", "image") if k in arrays)
    raw = torch.from_numpy(np.array(arrays[kind])).to(device)  # a writable copy
    shape = tuple(raw.shape[1:])
    data = raw.permute(0, 3, 1, 2).contiguous() if kind == "image" else raw
    data = data.long() if kind == "tokens" else data  # nn.Embedding's index type
    labels = torch.from_numpy(np.array(arrays["label"])).long().to(device) if num_classes else None
    nets = tuple(net.to(device).train() for net in networks(config, shape, num_classes))
    first, second = nets if len(nets) == 2 else (None, *nets)  # the LM has no encoder
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
        opt = _adam([p for net in nets for p in net.parameters()], config, config.optim.lr)
    steps_taken = 0  # the step count the KL weight follows, as genjax's state.step

    def batch(scale):
        """A batch of examples and, for a conditional model, (their labels,), else ()."""
        index = torch.randint(len(data), (b,), device=device)
        x = data[index]
        if kind == "image":
            x = x.float() * (2 / 255) - 1 if scale == "gan" else x.float() / 255
        elif kind == "point":
            x = x.float()
        return x, (() if labels is None else (labels[index],))

    def fake_classes():
        """() for an unconditional model, else (classes drawn uniformly per example,)."""
        return (torch.randint(num_classes, (b,), device=device),) if num_classes else ()

    def gan_step():
        generator, discriminator = first, second
        z_dim = config.model.z_dim
        for _ in range(config.gan.n_critic):
            real, real_y = batch("gan")
            fake_y = fake_classes()
            with torch.no_grad(), autocast:
                fake = generator(torch.randn(b, z_dim, device=device), *fake_y).float()
            d_opt.zero_grad(set_to_none=True)
            real, fake = pack(real, m), pack(fake, m)
            with autocast:
                real_logits = discriminator(real, *real_y).float()
                loss = d_loss_fn(real_logits, discriminator(fake, *fake_y).float())
                if config.gan.loss == "wgan_gp":
                    weight = config.gan.gp_weight
                    loss = loss + gradient_penalty(discriminator, real, fake, weight, real_y)
            loss.backward()
            d_opt.step()
        discriminator.requires_grad_(False)
        g_opt.zero_grad(set_to_none=True)
        fake_y = fake_classes()
        with autocast:
            fake = generator(torch.randn(b, z_dim, device=device), *fake_y).float()
            g_loss_fn(discriminator(pack(fake, m), *fake_y).float()).backward()
        g_opt.step()
        discriminator.requires_grad_(True)

    def kl_loss(mean, logvar):
        """The loss's KL part at this step, then one step more (genjax's state.step + 1):
        kl_term, which without warm-up, free bits or cycles is beta times the mean KL, as
        genjax.objectives.negative_elbo weighs it."""
        nonlocal steps_taken
        steps_taken += 1
        return kl_term(config.vae, steps_taken - 1, config.num_steps, mean, logvar)

    def vae_step():
        encoder, decoder = first, second
        x, y = batch("vae")
        if config.vae.binarize and config.vae.likelihood == "bernoulli":
            x = (torch.rand_like(x) < x).float()
        opt.zero_grad(set_to_none=True)
        with autocast:
            mean, logvar = (t.float() for t in encoder(x, *y))
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            out = (decoder(z, x) if ar else decoder(z, *y)).float()
        if config.vae.likelihood == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        else:
            mu, log_std = out.chunk(2, dim=1)
            z_score = (x - mu) * torch.exp(-log_std)
            recon = (0.5 * z_score.square() + log_std + 0.5 * LOG_2PI).flatten(1).sum(1)
        (recon.mean() + kl_loss(mean, logvar)).backward()
        opt.step()

    def text_step():
        """genjax.families.text's step: <bos> + the rows shifted right as the decoder's
        inputs, words among them replaced by <unk> at rate vae.word_dropout (the sequence
        VAE), -log p(x) summed over each row's real tokens (<eos> counted, <pad> not) and
        averaged over rows, plus the sequence VAE's kl_term with z = mean + std * eps."""
        encoder, decoder = first, second
        tokens, _ = batch("text")
        prev = torch.cat([torch.full_like(tokens[:, :1], BOS_ID), tokens[:, :-1]], 1)
        rate = config.vae.word_dropout if encoder is not None else 0.0
        if rate:
            drop = torch.rand(prev.shape, device=device) < rate
            prev = prev.masked_fill(drop & (prev != BOS_ID) & (prev != PAD_ID), UNK_ID)
        opt.zero_grad(set_to_none=True)
        z = None
        with autocast:
            if encoder is not None:
                mean, logvar = (t.float() for t in encoder(tokens))
                z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            logits = decoder(z, prev).float()
        nll = F.cross_entropy(
            logits.flatten(0, 1), tokens.flatten(), ignore_index=PAD_ID, reduction="sum"
        )
        loss = nll / len(tokens)
        if encoder is not None:
            loss = loss + kl_loss(mean, logvar)
        loss.backward()
        opt.step()

    step = gan_step if gan else text_step if kind == "tokens" else vae_step

    def call():
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    call.networks = nets  # what it trains, for the tests to look at
    return call


def count_flops(call) -> int:
    """FLOPs of one `call()` by torch's own counter (torch.utils.flop_counter): the
    convolutions and matmuls of the forward and backward passes; elementwise work (norms,
    activations, losses, Adam) is not counted: the work of these layers computed directly
    (no Winograd or FFT convolutions), with nothing wasted. The counter does not know cuDNN's
    fused RNN, so a network with a GRU is counted with cuDNN off: nn.GRU then runs, as on
    CPU, as the matmuls of each step, the same FLOPs, which the counter sees."""
    from contextlib import nullcontext

    from torch.utils.flop_counter import FlopCounterMode

    recurrent = any(isinstance(m, nn.RNNBase) for net in call.networks for m in net.modules())
    cudnn = torch.backends.cudnn.flags(enabled=False) if recurrent else nullcontext()
    with FlopCounterMode(display=False) as counter, cudnn:
        call()
    return counter.get_total_flops()
