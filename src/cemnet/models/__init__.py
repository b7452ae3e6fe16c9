"""Model presets: ``create_model(name, **overrides)`` and ``list_models()``.

=================  =========  ===========  ==========================================
name               data       twin of      what
=================  =========  ===========  ==========================================
``lenet5``         MNIST                   modified LeNet-5 CNN (paper Table 1)
``cemnet-mnist``   MNIST      lenet5       its CEMNet
``vgg-small``      CIFAR-10                small VGG CNN (paper Table 2)
``cemnet-small``   CIFAR-10   vgg-small    its CEMNet
``vgg-large``      CIFAR-10                large VGG CNN
``cemnet-large``   CIFAR-10   vgg-large    its CEMNet
``fcnn-mnist``     MNIST      lenet5       FCNN's method, reconstructed on lenet5's plan
``fcnn-small``     CIFAR-10   vgg-small    FCNN's method, reconstructed on vgg-small's plan
=================  =========  ===========  ==========================================

The overrides ``weight_fixation=False``, ``batch_norm=False`` and
``dropout=False`` give the ablation rows of the paper's tables.
"""

from cemnet.models._registry import (
    ModelInfo,
    count_parameters,
    create_model,
    list_models,
    model_info,
    parse_option,
    register_model,
)
from cemnet.models.convnets import OPTION_CHOICES, CEMNet, ConvNet, NetSpec
from cemnet.models.fcnn import FCNN
from cemnet.models.plan import LayerPlan
from cemnet.models.reader import from_cnn, read_plan
from cemnet.models.user_file import is_model_file  # registers the FILE.py:FUNCTION names

__all__ = [
    "FCNN",
    "OPTION_CHOICES",
    "CEMNet",
    "ConvNet",
    "LayerPlan",
    "ModelInfo",
    "NetSpec",
    "count_parameters",
    "create_model",
    "from_cnn",
    "is_model_file",
    "list_models",
    "model_info",
    "parse_option",
    "read_plan",
    "register_model",
]
