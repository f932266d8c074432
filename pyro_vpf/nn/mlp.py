"""A plain multilayer perceptron, the encoder and decoder of static models."""

from torch import nn

__all__ = ["MLP"]


class MLP(nn.Sequential):
    """``in -> hidden -> ... -> out`` with SiLU activations between linear layers.

    Args:
        in_dim (int): input size.
        hidden_dim (int): width of every hidden layer.
        out_dim (int): output size.
        hidden_layers (int): number of hidden layers (>= 1).
    """

    def __init__(self, in_dim, hidden_dim, out_dim, hidden_layers=2):
        if min(in_dim, hidden_dim, out_dim, hidden_layers) < 1:
            raise ValueError(
                "in_dim, hidden_dim, out_dim and hidden_layers must be >= 1, got "
                f"{in_dim}, {hidden_dim}, {out_dim}, {hidden_layers}")
        layers = [nn.Linear(in_dim, hidden_dim), nn.SiLU()]
        for _ in range(hidden_layers - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.SiLU()]
        layers.append(nn.Linear(hidden_dim, out_dim))
        super().__init__(*layers)
