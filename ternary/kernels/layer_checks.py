"""One check of a layer's integer tensors, shared by the kernel launchers (Triton linear,
grouped and update, TileLang): dtypes and shapes from the layer contract, one error naming
the tensor at fault."""

from __future__ import annotations

import torch


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_layer_tensors(
    where: str, *, in_features: int, group_size: int, device: torch.device | None = None,
    contiguous: bool = False, **tensors: torch.Tensor | None,
) -> None:
    """Raise ``ValueError`` unless every given tensor matches a layer of ``N = T_packed.shape[0]`` rows.

    ``tensors`` among ``T_packed`` (uint8 ``[N, ceil(K/5)]``), ``E`` and ``E_accum`` (int8
    ``[N, ceil(K/G)]``), ``T_accum`` (int8 ``[N, K]``) and ``bias`` (int32 ``[N]``); ``None``
    means absent. ``device``: where all of them must be; ``contiguous``: required as well.
    """
    if group_size <= 0 or group_size % 5:
        raise ValueError(f"{where}: group_size={group_size} must be a positive multiple of 5")
    if in_features <= 0:
        raise ValueError(f"{where}: in_features={in_features} must be positive")
    packed = tensors["T_packed"]
    rows = packed.shape[0] if packed is not None and packed.dim() > 0 else -1
    groups = -(-in_features // group_size)
    contract = {
        "T_packed": (torch.uint8, [rows, -(-in_features // 5)]),
        "E": (torch.int8, [rows, groups]),
        "E_accum": (torch.int8, [rows, groups]),
        "T_accum": (torch.int8, [rows, in_features]),
        "bias": (torch.int32, [rows]),
    }
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        dtype, shape = contract[name]
        if tensor.dtype != dtype or list(tensor.shape) != shape:
            raise ValueError(f"{where}: {name} must be {_name(dtype)} {shape}, "
                             f"got {_name(tensor.dtype)} {list(tensor.shape)}")
        if device is not None and tensor.device != device:
            raise ValueError(f"{where}: {name} is on {tensor.device}, expected {device}")
        if contiguous and not tensor.is_contiguous():
            raise ValueError(f"{where}: {name} must be contiguous")
