import json, sys, importlib
sys.path.insert(0, "tests"); sys.path.insert(0, "scratch/s29")
from offline_sass import full_sass, sass_instructions, innermost_loops
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
mod = importlib.import_module(sys.argv[1])
names = "fragment_ptr t_ptr e_ptr out_ptr M N BLOCKS CHUNKS EWORDS STEPS stride_os stride_om STEPS_PER_SPLIT".split()
signature = dict(zip(names, ["*i32", "*u8", "*i8", "*fp32"] + ["i32"] * 9))
signature.update(dict.fromkeys(("BYTES_PER_GROUP", "TILES"), "constexpr"))
for bpg, tiles, warps in ((8, 2, 8), (8, 1, 8)):
    source = GluonASTSource(mod._tiled_mma_kernel, signature=signature, constexprs={"BYTES_PER_GROUP": bpg, "TILES": tiles},
                            attrs={(i,): [["tt.divisibility", 16]] for i in range(4)})
    c = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "maxnreg": 128})
    ins = sass_instructions(c.asm["cubin"])
    loops = innermost_loops(ins)
    big = max(loops, key=len)
    ops = {}
    for i in big:
        op = i.split()[0] if not i.startswith("@") else i.split()[1]
        op = ".".join(op.split(".")[:2])
        ops[op] = ops.get(op, 0) + 1
    import os, subprocess, tempfile
    from triton.tools.disasm import path_to_cuobjdump
    h, path = tempfile.mkstemp(suffix=".cubin"); os.write(h, c.asm["cubin"]); os.close(h)
    res = subprocess.check_output([path_to_cuobjdump(), "-res-usage", path], text=True)
    regs = [l for l in res.splitlines() if "REG" in l]
    print(sys.argv[1], "tiles", tiles, regs[0].strip()[:80] if regs else "?", "STL", full_sass(c.asm["cubin"]).count("STL"),
          "loop len", len(big), sorted(ops.items(), key=lambda kv: -kv[1])[:14])
