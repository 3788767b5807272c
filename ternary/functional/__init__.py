"""Pure functions over integer state: layers, hooks and updates."""

from ternary.functional.embedding import embedding
from ternary.functional.grouped import grouped_linear
from ternary.functional.hooks import LinearHooks, NonFiniteError, combine_hooks, value_and_hooks
from ternary.functional.linear import linear
from ternary.functional.update import UpdateRule, update, update_layer

__all__ = [
    "LinearHooks",
    "NonFiniteError",
    "UpdateRule",
    "combine_hooks",
    "embedding",
    "grouped_linear",
    "linear",
    "update",
    "update_layer",
    "value_and_hooks",
]
