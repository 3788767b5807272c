"""What one call puts on the card: the nodes of a CUDA graph that captured it, by kind, read from the driver
(``cuGraphGetNodes`` / ``cuGraphNodeGetType``). A call whose count grows has gained per-call work (the
twenty-ninth session found a decode-in-GEMM call rebuilding its unit order from ~20 small kernels inside every
capture), so the benchmark records the count of each row and the GPU tests pin the counts of each path."""

from __future__ import annotations

import collections
import ctypes
import functools
import traceback
from collections.abc import Callable

import torch

# CUgraphNodeType values of the CUDA driver API (cuda.h).
NODE_KINDS = {0: "kernel", 1: "memcpy", 2: "memset", 3: "host", 4: "graph", 5: "empty", 6: "wait_event",
              7: "event_record", 8: "semaphore_signal", 9: "semaphore_wait", 10: "mem_alloc", 11: "mem_free",
              12: "batch_memop", 13: "conditional"}


@functools.cache
def _driver() -> ctypes.CDLL:
    return ctypes.CDLL("libcuda.so.1")


def _checked(result: int, what: str) -> None:
    if result != 0:
        raise RuntimeError(f"graph_nodes: {what} returned CUDA driver error {result}")


class _KernelNodeParams(ctypes.Structure):
    """``CUDA_KERNEL_NODE_PARAMS_v2`` (cuda.h)."""

    _fields_ = [("func", ctypes.c_void_p), ("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("shared_bytes", ctypes.c_uint), ("params", ctypes.c_void_p), ("extra", ctypes.c_void_p),
                ("kern", ctypes.c_void_p), ("ctx", ctypes.c_void_p)]


def _kernel_name(driver: ctypes.CDLL, node: ctypes.c_void_p) -> str:
    """The function name of a kernel node, or ``"?"`` where this driver cannot tell it."""
    params = _KernelNodeParams()
    name = ctypes.c_char_p()
    try:
        if driver.cuGraphKernelNodeGetParams_v2(node, ctypes.byref(params)) != 0:
            return "?"
        if params.func and driver.cuFuncGetName(ctypes.byref(name), ctypes.c_void_p(params.func)) == 0:
            return name.value.decode()
        if params.kern and driver.cuKernelGetName(ctypes.byref(name), ctypes.c_void_p(params.kern)) == 0:
            return name.value.decode()
    except AttributeError:  # a driver older than CUDA 12.3
        pass
    return "?"


def graph_nodes(graph: torch.cuda.CUDAGraph) -> list[str]:
    """The nodes of a captured ``graph`` (made with ``keep_graph=True``): ``kind`` (:data:`NODE_KINDS`) or, for a
    kernel, ``kernel:<function name>``. An empty capture has none."""
    driver = _driver()
    handle = ctypes.c_void_p(graph.raw_cuda_graph())
    if not handle.value:
        return []
    count = ctypes.c_size_t(0)
    _checked(driver.cuGraphGetNodes(handle, None, ctypes.byref(count)), "cuGraphGetNodes")
    nodes = (ctypes.c_void_p * count.value)()
    _checked(driver.cuGraphGetNodes(handle, nodes, ctypes.byref(count)), "cuGraphGetNodes")
    described = []
    for node in nodes[: count.value]:
        node = ctypes.c_void_p(node)
        kind = ctypes.c_int(-1)
        _checked(driver.cuGraphNodeGetType(node, ctypes.byref(kind)), "cuGraphNodeGetType")
        label = NODE_KINDS.get(kind.value, f"type {kind.value}")
        described.append(f"kernel:{_kernel_name(driver, node)}" if label == "kernel" else label)
    return described


def node_kinds(nodes: list[str]) -> collections.Counter:
    """``nodes`` (:func:`graph_nodes`) counted by kind."""
    return collections.Counter(node.split(":", 1)[0] for node in nodes)


def nodes_per_call(call: Callable[[], object], calls: int = 1) -> list[str]:
    """The nodes (:func:`graph_nodes`) of ``calls`` calls of ``call`` captured in one CUDA graph after an eager call
    (which compiles the kernels and keeps whatever the call keeps). Nothing is replayed. Needs a torch whose
    ``CUDAGraph`` takes ``keep_graph`` (2.9 or later)."""
    call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph(keep_graph=True)
    try:
        with torch.cuda.graph(graph):
            for _ in range(calls):
                call()
        return graph_nodes(graph)
    finally:
        graph.reset()


def launches_per_call(call: Callable[[], object]) -> int | None:
    """The operations (graph nodes: kernels, memsets, copies) one call of ``call`` puts on the card
    (:func:`nodes_per_call`), or ``None`` where they cannot be counted: no CUDA card, no ``libcuda``, a torch
    without ``keep_graph``, or a call that cannot be captured (its traceback is printed; a benchmark row goes on
    without the count)."""
    if not torch.cuda.is_available():
        return None
    try:
        _driver()
        return len(nodes_per_call(call))
    except Exception:
        traceback.print_exc()
        return None
