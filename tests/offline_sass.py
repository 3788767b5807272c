"""The whole SASS of a compiled kernel for the offline-compile tests.

``CompiledKernel.asm["sass"]`` (Triton's disassembly helper) stops at the first instruction whose
offset needs five hex digits, i.e. after 64 KB of code, so counts taken from it miss the rest of a
large kernel. :func:`full_sass` runs ``cuobjdump`` on the cubin itself and keeps every instruction."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

from triton.tools.disasm import path_to_cuobjdump

_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]+\*/\s*([^;]*;)", re.MULTILINE)


def full_sass(cubin: bytes) -> str:
    """Every SASS instruction of ``cubin``, one per line (no encodings)."""
    handle, path = tempfile.mkstemp(suffix=".cubin")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(cubin)
        text = subprocess.check_output([path_to_cuobjdump(), "-sass", path], text=True)
    finally:
        os.remove(path)
    return "\n".join(match.strip() for match in _INSTRUCTION.findall(text))
