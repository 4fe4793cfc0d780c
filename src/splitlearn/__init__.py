"""splitlearn: split learning (SplitNN) across parties that never share raw data.

The public API, in one namespace::

    import splitlearn as sl

    split = sl.ushaped(model, ["features.denseblock2", "features.norm5"], in_shape=(1, 32, 32))
    sim = sl.Simulation(split, train=train, test=test, optimizer=sl.OptimizerSpec("adam", lr=1e-3))
    sim.fit(5)
    model.load_state_dict(sim.state_dict())

Names are imported on first use, so ``import splitlearn`` stays light: it imports neither gRPC
nor the models, and adds no log handler.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # configurations: each cuts a model (any nn.Module, by module name) into a Split
    "vanilla": "splitlearn.split.configs",
    "ushaped": "splitlearn.split.configs",
    "vertical": "splitlearn.split.configs",
    "multihop": "splitlearn.split.configs",
    "multitask": "splitlearn.split.configs",
    "Vertical": "splitlearn.split.configs",
    "MultiHead": "splitlearn.split.configs",
    "Split": "splitlearn.split.configs",
    "split_model": "splitlearn.split.segments",
    "CutError": "splitlearn.split.segments",
    # training
    "Simulation": "splitlearn.split.simulation",
    "OptimizerSpec": "splitlearn.split.state",
    "ArrayDataset": "splitlearn.data.dataset",
    "load_dataset": "splitlearn.data.registry",
    "build_model": "splitlearn.models.registry",
    "load_config": "splitlearn.config",
    "train": "splitlearn.runner.training",
    # privacy
    "NoPeek": "splitlearn.privacy.nopeek",
    "leakage": "splitlearn.privacy.dcor",
    "distance_correlation": "splitlearn.privacy.dcor",
    "detect_collapse": "splitlearn.privacy.nopeek",
    "GradientNoise": "splitlearn.privacy.attacks.label_leakage",
    # wire and compute
    "Compressor": "splitlearn.split.compression",
    "Chain": "splitlearn.split.hooks",
    "CODECS": "splitlearn.split.compression",
    "FlopMeter": "splitlearn.accounting.meter",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from splitlearn.accounting.meter import FlopMeter
    from splitlearn.config import load_config
    from splitlearn.data.dataset import ArrayDataset
    from splitlearn.data.registry import load_dataset
    from splitlearn.models.registry import build_model
    from splitlearn.privacy.attacks.label_leakage import GradientNoise
    from splitlearn.privacy.dcor import distance_correlation, leakage
    from splitlearn.privacy.nopeek import NoPeek, detect_collapse
    from splitlearn.runner.training import train
    from splitlearn.split.compression import CODECS, Compressor
    from splitlearn.split.configs import MultiHead, Split, Vertical, multihop, multitask, ushaped, vanilla, vertical
    from splitlearn.split.hooks import Chain
    from splitlearn.split.segments import CutError, split_model
    from splitlearn.split.simulation import Simulation
    from splitlearn.split.state import OptimizerSpec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'splitlearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
