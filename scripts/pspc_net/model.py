"""The reference networks' architectures and their EDM preconditioning wrapper (docs/science.md section 1).

Three families of F, chosen by `arch` in the network's config:
- "unet" (preset "small", the reference network): 28x28 -> 14x14 -> 7x7 with 32/64/96 channels, residual
  blocks with GroupNorm + SiLU and a noise embedding (scale and shift), self-attention at 7x7;
- "dit": a DiT-style transformer on 2x2 patches with adaLN-Zero conditioning on the noise embedding;
- "resnet": 3x3 residual blocks at full resolution, no down-sampling, no attention, so the receptive
  field is bounded by the depth (a local CNN).
Tensors are `[batch, channels, height, width]` float32.
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

CHECKPOINT_FORMAT = "pspc-edm-unet"
CHECKPOINT_VERSION = 1

# Named sizes. "small" is the reference network (about 1.9M parameters); "tiny" exists for fast tests.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[14], emb_channels=16),
    "small": dict(model_channels=32, channel_mult=[1, 2, 3], num_blocks=1, attn_resolutions=[7]),
    "medium": dict(model_channels=32, channel_mult=[1, 2, 4], num_blocks=1, attn_resolutions=[7]),
    "large": dict(model_channels=32, channel_mult=[1, 2, 4], num_blocks=2, attn_resolutions=[7]),
    # DiT-style transformer: 14x14 tokens of 2x2 patches, 6 blocks of width 128, 4 heads.
    "dit": dict(arch="dit", patch_size=2, hidden=128, depth=6, heads=4),
    "dit-tiny": dict(arch="dit", patch_size=2, hidden=16, depth=1, heads=2, emb_channels=16),
    # Local CNN: 5 residual blocks of two 3x3 convolutions at 28x28, receptive field 4 * 5 + 5 = 25 pixels.
    "resnet": dict(arch="resnet", model_channels=48, num_blocks=5),
    "resnet-tiny": dict(arch="resnet", model_channels=8, num_blocks=1, emb_channels=16),
}

ARCHITECTURES = ("unet", "dit", "resnet")


def _groups(channels: int) -> int:
    """GroupNorm groups: the largest divisor of `channels` up to 32 with at least 4 channels each."""
    g = min(32, max(1, channels // 4))
    while channels % g:
        g -= 1
    return g


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class NoiseEmbedding(nn.Module):
    """Fourier features of c_noise at fixed log-spaced frequencies, then a 2-layer MLP.

    c_noise = log(t)/4 spans about [-1.6, 1.1] over t in [0.002, 80]; frequencies 1..64 rad per unit
    resolve that range finely without random (seed-dependent) buffers.
    """

    def __init__(self, emb_channels: int, num_freqs: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.logspace(0, math.log10(64.0), num_freqs), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * num_freqs, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels), nn.SiLU()
        )

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        phase = c_noise.to(torch.float32)[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([phase.cos(), phase.sin()], dim=1))


class ChannelNorm(nn.Module):
    """Normalises each pixel over its channels alone (a per-pixel LayerNorm with a learned scale and shift).

    GroupNorm averages over the whole image, which lets every output pixel depend on every input pixel;
    the local ResNet uses this instead so its receptive field is exactly what its convolutions reach.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(_groups(channels), channels)


class ResBlock(nn.Module):
    """Norm-SiLU-conv twice; the embedding scales and shifts the second norm (EDM's adaptive scale).

    `norm` builds the normalisation for a channel count (GroupNorm by default).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_channels: int, dropout: float, norm=_group_norm):
        super().__init__()
        self.norm0 = norm(in_ch)
        self.conv0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_channels, 2 * out_ch)
        self.norm1 = norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(self.dropout(h))
        return (h + self.skip(x)) * math.sqrt(0.5)


class Attention(nn.Module):
    """Multi-head self-attention over all positions, residual, output projection zero-initialised."""

    def __init__(self, channels: int, channels_per_head: int = 64):
        super().__init__()
        self.heads = max(1, channels // channels_per_head)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # [b, heads, hw, c/heads]
        a = F.scaled_dot_product_attention(q, k, v)
        a = a.transpose(-1, -2).reshape(b, c, h, w)
        return (x + self.proj(a)) * math.sqrt(0.5)


class Block(nn.Module):
    """A ResBlock, optionally followed by self-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_channels: int, dropout: float, attention: bool):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_channels, dropout)
        self.attn = Attention(out_ch) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(nn.Module):
    """F(x, c_noise): DDPM-style U-Net, every encoder activation is a skip into the decoder.

    Downsampling is a stride-2 3x3 conv (28 -> 14 -> 7), upsampling a 3x3 conv then nearest-neighbour.
    """

    def __init__(
        self,
        img_resolution: int = 28,
        img_channels: int = 1,
        model_channels: int = 32,
        channel_mult: list[int] = (1, 2, 3),
        num_blocks: int = 1,
        attn_resolutions: list[int] = (7,),
        emb_channels: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        emb_channels = emb_channels or 4 * model_channels
        self.embed = NoiseEmbedding(emb_channels)
        self.conv_in = nn.Conv2d(img_channels, model_channels, 3, padding=1)

        self.enc = nn.ModuleList()
        skip_ch = [model_channels]
        ch, res = model_channels, img_resolution
        for level, mult in enumerate(channel_mult):
            if level > 0:
                self.enc.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                res = (res + 1) // 2
                skip_ch.append(ch)
            for _ in range(num_blocks):
                self.enc.append(Block(ch, model_channels * mult, emb_channels, dropout, res in attn_resolutions))
                ch = model_channels * mult
                skip_ch.append(ch)

        self.mid = nn.ModuleList(
            [Block(ch, ch, emb_channels, dropout, True), Block(ch, ch, emb_channels, dropout, False)]
        )

        self.dec = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks + 1):
                out = model_channels * mult
                self.dec.append(Block(ch + skip_ch.pop(), out, emb_channels, dropout, res in attn_resolutions))
                ch = out
            if level > 0:
                res = res * 2 if res * 2 <= img_resolution else img_resolution
                # Conv before the nearest upsampling: a quarter of the cost of convolving after it.
                self.dec.append(
                    nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.Upsample(scale_factor=2, mode="nearest"))
                )
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = _zero(nn.Conv2d(ch, img_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        skips = [h]
        for m in self.enc:
            h = m(h, emb) if isinstance(m, Block) else m(h)
            skips.append(h)
        for m in self.mid:
            h = m(h, emb)
        for m in self.dec:
            if isinstance(m, Block):
                h = m(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = m(h)
                # Crop to the skip's size: a no-op for 7 -> 14 -> 28, needed after odd sizes (e.g. 7 -> 4 -> 8).
                h = h[:, :, : skips[-1].shape[2], : skips[-1].shape[3]]
        return self.conv_out(F.silu(self.norm_out(h)))


class LocalResNet(nn.Module):
    """F(x, c_noise): conv_in, `num_blocks` ResBlocks at full resolution, conv_out; all kernels 3x3.

    No down-sampling, no attention and per-pixel normalisation (`ChannelNorm`): an output pixel sees a
    (4 num_blocks + 5)-pixel square around it (conv_in and conv_out add 2 each, every block 4), the local
    CNN of Kamb & Ganguli's analysis.
    """

    def __init__(
        self,
        img_resolution: int = 28,
        img_channels: int = 1,
        model_channels: int = 32,
        num_blocks: int = 5,
        emb_channels: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        emb_channels = emb_channels or 4 * model_channels
        self.embed = NoiseEmbedding(emb_channels)
        self.conv_in = nn.Conv2d(img_channels, model_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            [
                ResBlock(model_channels, model_channels, emb_channels, dropout, norm=ChannelNorm)
                for _ in range(num_blocks)
            ]
        )
        self.norm_out = ChannelNorm(model_channels)
        self.conv_out = _zero(nn.Conv2d(model_channels, img_channels, 3, padding=1))

    @property
    def receptive_field(self) -> int:
        return 4 * len(self.blocks) + 5

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.embed(c_noise)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero: the embedding gives shift, scale and gate of both halves."""

    def __init__(self, hidden: int, heads: int, emb_channels: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm0 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        # adaLN-Zero: the modulation starts at zero, so every block starts as the identity.
        self.modulation = _zero(nn.Linear(emb_channels, 6 * hidden))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift0, scale0, gate0, shift1, scale1, gate1 = self.modulation(emb)[:, None, :].chunk(6, dim=2)
        b, n, c = x.shape
        h = torch.addcmul(shift0, self.norm0(x), scale0 + 1)
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + gate0 * self.proj(a)
        h = torch.addcmul(shift1, self.norm1(x), scale1 + 1)
        return x + gate1 * self.mlp(h)


class DiT(nn.Module):
    """F(x, c_noise): a DiT-style transformer (Peebles & Xie) on `patch_size` patches.

    Patches are embedded linearly with a fixed 2-D sine-cosine position code; `depth` adaLN-Zero blocks
    conditioned on the noise embedding; a modulated final layer maps each token back to its patch.
    Image sides must be multiples of `patch_size`.
    """

    def __init__(
        self,
        img_resolution: int = 28,
        img_channels: int = 1,
        patch_size: int = 2,
        hidden: int = 128,
        depth: int = 6,
        heads: int = 4,
        emb_channels: int | None = None,
    ):
        super().__init__()
        if img_resolution % patch_size:
            raise ValueError(f"image side {img_resolution} is not a multiple of the patch size {patch_size}")
        if hidden % heads or (hidden // heads) % 2:
            raise ValueError(f"hidden width {hidden} must split into {heads} heads of even width")
        emb_channels = emb_channels or hidden
        self.patch_size, self.img_channels = patch_size, img_channels
        self.grid = img_resolution // patch_size
        self.embed = NoiseEmbedding(emb_channels)
        self.patch_in = nn.Conv2d(img_channels, hidden, patch_size, stride=patch_size)
        self.register_buffer("position", _sincos_2d(self.grid, hidden), persistent=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden, heads, emb_channels) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.modulation_out = _zero(nn.Linear(emb_channels, 2 * hidden))
        self.patch_out = _zero(nn.Linear(hidden, patch_size * patch_size * img_channels))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.embed(c_noise)
        b, p, g, c = x.shape[0], self.patch_size, self.grid, self.img_channels
        h = self.patch_in(x).flatten(2).transpose(1, 2) + self.position  # [b, g*g, hidden]
        for block in self.blocks:
            h = block(h, emb)
        shift, scale = self.modulation_out(emb)[:, None, :].chunk(2, dim=2)
        h = self.patch_out(torch.addcmul(shift, self.norm_out(h), scale + 1))  # [b, g*g, p*p*c]
        return h.reshape(b, g, g, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)


def _sincos_2d(grid: int, width: int) -> torch.Tensor:
    """[grid*grid, width] fixed position code: half the channels encode the row, half the column."""
    quarter = width // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter))
    pos = torch.arange(grid, dtype=torch.float64)[:, None] * freqs[None, :]  # [grid, quarter]
    code = torch.cat([pos.sin(), pos.cos()], dim=1)  # [grid, 2 quarter]
    rows = code[:, None, :].expand(grid, grid, 2 * quarter)
    cols = code[None, :, :].expand(grid, grid, 2 * quarter)
    out = torch.zeros(grid, grid, width, dtype=torch.float64)
    out[:, :, : 4 * quarter] = torch.cat([rows, cols], dim=2)
    return out.reshape(grid * grid, width).to(torch.float32)


_NETWORKS: dict[str, type[nn.Module]] = {"unet": UNet, "dit": DiT, "resnet": LocalResNet}


class EDMPrecond(nn.Module):
    """EDM denoiser D(z, t) = c_skip z + c_out F(c_in z, c_noise) with sigma_data = 0.5 (docs/science.md s.1).

    `forward(x, sigma)`: x `[B, C, H, W]`, sigma a scalar or `[B]`; returns D, same shape as x.
    `arch` names F's family ("unet", "dit", "resnet"; configs written before there was a choice are
    U-Nets). `config` holds the constructor arguments (plain types) so a checkpoint rebuilds the module.
    """

    def __init__(self, sigma_data: float = 0.5, arch: str = "unet", **net_kwargs: Any):
        super().__init__()
        if arch not in _NETWORKS:
            raise ValueError(f"unknown architecture {arch!r}, expected one of {list(_NETWORKS)}")
        self.sigma_data = float(sigma_data)
        self.arch = arch
        network = _NETWORKS[arch]
        self.model = network(**net_kwargs)
        # Every argument, defaults included, so a checkpoint does not depend on today's defaults. The U-Net's
        # config keeps its original form (no "arch" key), so older readers still load it.
        bound = inspect.signature(network.__init__).bind(None, **net_kwargs)
        bound.apply_defaults()
        net_args = {k: _plain(v) for k, v in bound.arguments.items() if k != "self"}
        self.config = {"sigma_data": self.sigma_data, **({} if arch == "unet" else {"arch": arch}), **net_args}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "EDMPrecond":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}, expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in, c_noise) for each sigma, in sigma's dtype."""
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1 / (sd**2 + sigma**2).sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = (c[:, None, None, None] for c in self.coefficients(sigma))
        # Under autocast F may come back in bf16; the preconditioning stays float32.
        f = self.model(c_in * x, c_noise.reshape(-1)).to(torch.float32)
        return c_skip * x + c_out * f


def _plain(v: Any) -> Any:
    """Tuples to lists so the config round-trips through torch.load(weights_only=True) unchanged."""
    return list(v) if isinstance(v, tuple) else v


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_dict(net: EDMPrecond, state_dict: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The on-disk checkpoint: {"format", "version", "config", "state_dict"} with float32 tensors."""
    sd = net.state_dict() if state_dict is None else state_dict
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": dict(net.config),
        "state_dict": {k: v.detach().to("cpu", torch.float32).clone() for k, v in sd.items()},
    }


def atomic_save(obj: Any, path: str) -> None:
    """torch.save to a temporary file in the target folder, fsync, then rename over `path`."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=os.path.dirname(path))
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide exports from other users
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(net: EDMPrecond, path: str, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write `net` (or `state_dict` with net's config, e.g. EMA weights) as a state-dict checkpoint."""
    atomic_save(export_dict(net, state_dict), path)


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> EDMPrecond:
    """Rebuild an `EDMPrecond` from a checkpoint written by `save_checkpoint`; loads no pickled code."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {ckpt.get('version')}, expected {CHECKPOINT_VERSION}")
    net = EDMPrecond(**ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()
