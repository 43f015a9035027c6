"""Test-session settings.

The models in these tests are tiny: torch's intra-op thread pool only adds synchronisation cost
to them, and on a busy machine its spinning threads slow a step down by an order of magnitude.
"""

import torch

torch.set_num_threads(1)
