"""Data-parallel training: integer vote all-reduce and a cross-rank state check."""

from ternary.distributed.check import StateDivergedError, check_ranks_agree, fingerprints
from ternary.distributed.votes import vote_dtype, vote_update

__all__ = ["StateDivergedError", "check_ranks_agree", "fingerprints", "vote_dtype", "vote_update"]
