"""Small transformer layers shared by the encoders built in this package."""
import torch
from torch import nn


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, with timm's names (``fc1``, ``fc2``) so checkpoint keys match."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def init_linear(module: nn.Module):
    """timm's transformer init for ``module.apply``: truncated-normal weights, zero biases.

    Only random-weight models (tests, demos) keep these values; a checkpoint replaces them.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
