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
- `serve`: the network endpoint, `python -m pspc_net.serve`; `client`: `Client`, the client of it and of
  `pspc serve` (exact denoisers, docs/python.md), and the lower-level `NetworkClient`; `launch`: `pspc serve`
  as a child process; `bench_serve`: its single-query and batch throughput (scripts/bench-serve.sh);
  `bench`: its throughput next to the network called directly (scripts/bench-network.sh).
"""

from .client import Client, RemoteDenoiser
from .wire import WireError

# The network's modules need torch, an optional dependency of the client: they load on first use.
_LAZY = {
    "load_fashion_mnist": "data",
    "read_idx_images": "data",
    "to_unit": "data",
    "edm_loss": "edm",
    "euler_sample": "edm",
    "heun_sample": "edm",
    "time_grid": "edm",
    "EDMPrecond": "model",
    "UNet": "model",
    "load_checkpoint": "model",
    "save_checkpoint": "model",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pspc_net' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = ["Client", "RemoteDenoiser", "WireError", *_LAZY]
