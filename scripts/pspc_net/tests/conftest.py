"""Keep the tests on one core: the machine's other core builds Swift."""

import torch

torch.set_num_threads(1)
