"""Direct vote update of one ternary layer from its hooks.

Every implementation module exposes
``update(T_packed, E, E_accum, T_accum, bias, x [M, K], grad_y [M, N], *, in_features,
group_size, theta_t, theta_e, e_min, e_max, bias_step, validated=False) -> UpdatedTensors``
returning new tensors (the inputs are never written). The gradient ``g = grad_y.T @ x``
drives the rule; only its signs matter. See ``reference.py`` for the rule itself.

Each implementation refuses a corrupt ``T_packed`` (:class:`ternary.state.CorruptStateError`),
which costs a host sync per call; ``validated=True`` says the caller has checked it already
(``ternary.functional.update`` checks every layer of a state with one sync per device). A
corrupt byte passed as validated is undefined behaviour (the backends may disagree), not a
checked error.
"""

from typing import NamedTuple

import torch


class UpdatedTensors(NamedTuple):
    """New integer tensors of one layer after an update (bias is None when absent)."""

    T_packed: torch.Tensor
    E: torch.Tensor
    E_accum: torch.Tensor
    T_accum: torch.Tensor
    bias: torch.Tensor | None
