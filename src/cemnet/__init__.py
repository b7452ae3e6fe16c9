"""cemnet: convolutional networks trained in the frequency domain (CEMNet)."""

from cemnet import nn, spectral
from cemnet.models import count_parameters, create_model, from_cnn, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "count_parameters", "create_model", "from_cnn", "list_models", "nn", "spectral"]
