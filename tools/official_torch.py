"""The official PyTorch Conformer, imported from a user's checkout of pengzhiliang/Conformer for the
developer tools that compare against it (tests/fixtures/make_fidelity_fixture.py,
tools/bench_torch_worker.py), with a minimal stand-in for the `timm.models.layers` it imports
(why: docs/development.md "The PyTorch side of the tools").  Needs torch; nothing official is vendored."""
import importlib.util
import sys
import types
from pathlib import Path

from torch import nn


class DropPath(nn.Module):
    """timm's DropPath: in training, zero whole samples with probability p and scale the rest by 1/(1-p)."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


def load_official_conformer(checkout):
    """The `Conformer` class of the official repository at `checkout`."""
    source = Path(checkout) / "conformer.py"
    if not source.is_file():
        raise FileNotFoundError(f"{checkout} has no conformer.py: not a checkout of pengzhiliang/Conformer")
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.trunc_normal_ = nn.init.trunc_normal_
    sys.modules["timm"] = types.ModuleType("timm")
    sys.modules["timm.models"] = types.ModuleType("timm.models")
    sys.modules["timm.models.layers"] = layers

    spec = importlib.util.spec_from_file_location("official_conformer", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Conformer
