"""Reference EDM diffusion network for Fashion-MNIST (28x28x1), trained on CPU.

The network is the "real denoiser" that the Swift engine's patch-posterior denoisers are compared
against (docs/science.md sections 1 and 6). Modules:
- `data`: Fashion-MNIST IDX reader.
- `model`: a small U-Net and its EDM preconditioning wrapper `EDMPrecond`, `load_checkpoint`.
- `edm`: EDM time grid, Heun / Euler samplers, training loss.
- `train`: resumable training loop used by `scripts/train_reference_network.py`.
- `wire`: the pspc wire protocol (frames, tensors, handshake), byte for byte as Sources/PSPCWire.
- `adapters`: networks as EDM denoisers D(z, t): EDM checkpoints and pickles, eps-prediction VP nets.
- `heatmap`: gradient-sensitivity heatmaps and their locality figure (docs/science.md section 4).
- `serve`: the network endpoint, `python -m pspc_net.serve`; `client`: a Python client of it;
  `bench`: its throughput next to the network called directly (scripts/bench-network.sh).
"""

from .data import load_fashion_mnist, read_idx_images, to_unit
from .edm import edm_loss, euler_sample, heun_sample, time_grid
from .model import EDMPrecond, UNet, load_checkpoint, save_checkpoint

__all__ = [
    "EDMPrecond",
    "UNet",
    "edm_loss",
    "euler_sample",
    "heun_sample",
    "load_checkpoint",
    "load_fashion_mnist",
    "read_idx_images",
    "save_checkpoint",
    "time_grid",
    "to_unit",
]
