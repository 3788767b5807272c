"""Integer state records, packing and audit."""

from ternary.state.audit import Audit, audit, leaf_paths
from ternary.state.decode_state import DecodeLinearState
from ternary.state.linear_state import DEFAULT_BIAS_FRAC_BITS, DEFAULT_GROUP_SIZE, LinearState, groups_per_row
from ternary.state.packing import MAX_VALID_BYTE, CorruptStateError, check_packed, pack, packed_width, unpack
from ternary.state.pytree import pytree_record

__all__ = [
    "Audit",
    "CorruptStateError",
    "DecodeLinearState",
    "DEFAULT_BIAS_FRAC_BITS",
    "DEFAULT_GROUP_SIZE",
    "LinearState",
    "MAX_VALID_BYTE",
    "audit",
    "check_packed",
    "groups_per_row",
    "leaf_paths",
    "pack",
    "packed_width",
    "pytree_record",
    "unpack",
]
