"""The byte-level ternary language model in functional form.

``init_model(config, seed=)`` builds a :class:`ModelState` (integer tensors only),
``forward(state, tokens, config)`` returns ``(logits, aux)``, ``loss`` is the
training objective for :func:`ternary.value_and_hooks`, and ``observe`` applies the
integer bookkeeping (VQ usage, graph edges) that follows a step.
"""

from ternary.model.config import PRESET_RULES, PRESETS, VOCAB, ModelConfig, preset, preset_rule
from ternary.model.network import BlockState, ModelAux, ModelState, forward, init_model
from ternary.model.objective import StepAux, bits_per_byte, loss, observe

__all__ = [
    "PRESETS",
    "PRESET_RULES",
    "VOCAB",
    "BlockState",
    "ModelAux",
    "ModelConfig",
    "ModelState",
    "StepAux",
    "bits_per_byte",
    "forward",
    "init_model",
    "loss",
    "observe",
    "preset",
    "preset_rule",
]
