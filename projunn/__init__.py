"""projUNN: train networks whose weight matrices stay exactly unitary or orthogonal.

Kiani, Balestriero, LeCun, Lloyd, "projUNN: efficient method for training deep networks
with unitary matrices", NeurIPS 2022. Pure PyTorch; no training framework is imported.
"""

from . import init
from .conv import OrthogonalConv2d
from .declare import as_matrix, orthogonal_
from .linalg import polar, unitarity_error
from .optim import NonFiniteUpdateWarning, ProjUNN
from .parametrizations import parametrize
from .rnn import ModReLU, UnitaryRNN, UnitaryRNNCell
from .samplers import column_sampling, lsi
from .updates import projunn_d, projunn_t
from .walk import named_unitary_parameters, param_groups, unitarity_errors, unitary_parameters

__all__ = [
    "projunn_t",
    "projunn_d",
    "lsi",
    "column_sampling",
    "unitarity_error",
    "unitarity_errors",
    "polar",
    "ProjUNN",
    "NonFiniteUpdateWarning",
    "param_groups",
    "named_unitary_parameters",
    "unitary_parameters",
    "orthogonal_",
    "as_matrix",
    "UnitaryRNNCell",
    "UnitaryRNN",
    "ModReLU",
    "OrthogonalConv2d",
    "parametrize",
    "init",
]

__version__ = "0.1.0"
