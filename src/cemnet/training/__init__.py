"""Training and evaluation with the paper's recipe: configuration, the training step, the run, checkpoints.

==============================  ===============================================
module                          what it owns
==============================  ===============================================
``cemnet.training.config``      :class:`TrainConfig`, :class:`Recipe`, :data:`PRESETS`
``cemnet.training.step``        :class:`TrainingStep` (the one definition of a step)
``cemnet.training.trainer``     :func:`fit` (any model, any data), :func:`train` (``cemnet train``, through ``fit``)
``cemnet.training.evaluation``  :func:`evaluate`, :func:`recalibrate_batch_norm`
``cemnet.training.checkpoint``  safetensors weights + ``weights_only`` state
``cemnet.training.distributed``  ``torchrun`` process groups
==============================  ===============================================
"""

from cemnet.training.config import PRESETS, Recipe, TrainConfig
from cemnet.training.evaluation import evaluate, recalibrate_batch_norm
from cemnet.training.step import TrainingStep, make_optimizer, make_schedule
from cemnet.training.trainer import TrainingDiverged, fit, train

__all__ = [
    "PRESETS",
    "Recipe",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingStep",
    "evaluate",
    "fit",
    "make_optimizer",
    "make_schedule",
    "recalibrate_batch_norm",
    "train",
]
