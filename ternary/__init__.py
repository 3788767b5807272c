"""true-ternary: train networks whose only persistent state is integers.

State records are immutable ``attrs`` pytrees of integer tensors; ``linear`` and
``embedding`` are pure functions of them; ``value_and_hooks`` returns what each
layer's update needs; ``update`` returns a new state tree. Triton and TileLang are
imported lazily, so ``import ternary`` needs only torch.
"""

from ternary.functional import (
    LinearHooks,
    NonFiniteError,
    UpdateRule,
    combine_hooks,
    embedding,
    linear,
    update,
    value_and_hooks,
)
from ternary.io import SnapshotError, diff, load, save
from ternary.kernels.registry import BackendError
from ternary.state import Audit, CorruptStateError, DecodeLinearState, LinearState, audit, pack, unpack

__version__ = "0.1.0"

__all__ = [
    "Audit",
    "BackendError",
    "CorruptStateError",
    "DecodeLinearState",
    "LinearHooks",
    "LinearState",
    "NonFiniteError",
    "SnapshotError",
    "UpdateRule",
    "audit",
    "combine_hooks",
    "diff",
    "embedding",
    "linear",
    "load",
    "pack",
    "save",
    "unpack",
    "update",
    "value_and_hooks",
]
