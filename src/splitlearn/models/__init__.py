"""Model zoo: every model is an ``nn.Sequential`` whose flattened leaves are its layers."""

from .alexnet import ALEXNET_TABLE, alexnet, alexnet_parameter_table, fc_parameter_share
from .cnn import small_cnn
from .layers import flatten_layers
from .mlp import mlp
from .registry import MODELS, build_model, register_model
from .resnet import resnet, resnet18, resnet50
from .vgg import vgg, vgg11, vgg16

__all__ = [
    "ALEXNET_TABLE",
    "MODELS",
    "alexnet",
    "alexnet_parameter_table",
    "build_model",
    "fc_parameter_share",
    "flatten_layers",
    "mlp",
    "register_model",
    "resnet",
    "resnet18",
    "resnet50",
    "small_cnn",
    "vgg",
    "vgg11",
    "vgg16",
]
