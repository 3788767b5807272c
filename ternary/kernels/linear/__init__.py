"""Ternary linear op: forward ``y = x @ W.T + b`` and ``grad_x = grad_y @ W``.

Every implementation module (``reference``, ``triton``, ``tilelang``) exposes

- ``forward(x [M, K], T_packed [N, ceil(K/5)] u8, E [N, ceil(K/G)] i8, bias [N] i32 | None,
  *, in_features, group_size, bias_frac_bits) -> y [M, N]`` in ``x.dtype``;
- ``grad_x(grad_y [M, N], T_packed, E, *, in_features, group_size) -> [M, K]`` in ``grad_y.dtype``.

``bridge.py`` is the one autograd bridge over them.
"""
