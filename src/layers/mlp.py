"""Transformer feed-forward: Dense -> GELU -> Dropout -> Dense -> Dropout (official `Mlp`)."""
from mindspore import nn

from src.kernels.dense import Dense
from .exportable_ops import GELU


class Mlp(nn.Cell):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0, approximate_gelu: bool = False):
        super().__init__()
        self.fc1 = Dense(in_features, hidden_features)
        self.act = GELU(approximate_gelu)
        self.fc2 = Dense(hidden_features, in_features)
        self.drop = nn.Dropout(p=drop)

    def construct(self, x):
        if self.fc1.uses_kernel(x) and self.act.uses_kernel(x):  # on CPU: one kernel after the product
            x = self.fc1(x, True)
        else:
            x = self.act(self.fc1(x))
        x = self.drop(x)
        return self.drop(self.fc2(x))
