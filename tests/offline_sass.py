"""The whole SASS of a compiled kernel for the offline-compile tests.

``CompiledKernel.asm["sass"]`` (Triton's disassembly helper) stops at the first instruction whose
offset needs five hex digits, i.e. after 64 KB of code, so counts taken from it miss the rest of a
large kernel. :func:`full_sass` runs ``cuobjdump`` on the cubin itself and keeps every instruction;
:func:`innermost_loops` finds the loops by their backward branches."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

from triton.tools.disasm import path_to_cuobjdump

_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s*([^;]*;)", re.MULTILINE)
_BRANCH = re.compile(r"\bBRA\s+(?:`\()?(0x[0-9a-f]+)")


def sass_instructions(cubin: bytes) -> list[tuple[int, str]]:
    """``(byte offset, instruction)`` of every SASS instruction of ``cubin``, in order."""
    handle, path = tempfile.mkstemp(suffix=".cubin")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(cubin)
        text = subprocess.check_output([path_to_cuobjdump(), "-sass", path], text=True)
    finally:
        os.remove(path)
    return [(int(offset, 16), instruction.strip()) for offset, instruction in _INSTRUCTION.findall(text)]


def full_sass(cubin: bytes) -> str:
    """Every SASS instruction of ``cubin``, one per line (no offsets or encodings)."""
    return "\n".join(instruction for _, instruction in sass_instructions(cubin))


def innermost_loops(instructions: list[tuple[int, str]]) -> list[list[str]]:
    """The instructions of each loop that holds no other: from a backward branch's target to the branch."""
    spans = []
    for offset, instruction in instructions:
        target = _BRANCH.search(instruction)
        if target and int(target.group(1), 16) <= offset:
            spans.append((int(target.group(1), 16), offset))
    inner = [(a, b) for a, b in spans if not any((a, b) != (c, d) and a <= c and d <= b for c, d in spans)]
    return [[text for offset, text in instructions if a <= offset <= b] for a, b in inner]
