"""minitensor.nn: modules, layers, losses and initialisation, named and behaving like torch.nn."""
from . import functional, init, utils
from .activation import GELU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .attention import MultiheadAttention
from .container import ModuleDict, ModuleList, Sequential
from .conv import Conv2d
from .dropout import Dropout
from .linear import Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module
from .normalization import LayerNorm
from .parameter import Parameter
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .rnn import LSTM, LSTMCell
from .sparse import Embedding
from .transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Identity", "Linear", "Conv2d", "LayerNorm",
    "Embedding", "Dropout", "ReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "Softmax", "LogSoftmax", "LSTMCell", "LSTM",
    "MultiheadAttention", "TransformerEncoderLayer", "TransformerEncoder", "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding", "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss",
    "functional", "init", "utils",
]
