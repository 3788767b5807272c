import sys, re, subprocess, tempfile
sys.path.insert(0, "tests"); sys.path.insert(0, "scratch/s33")
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon import language as gl
from triton.tools.disasm import path_to_cuobjdump
from offline_sass import sass_instructions, innermost_loops
import twg2

names = ("digit_table x_desc t_ptr e_ptr out_ptr M N BLOCKS CHUNKS EWORDS STEPS stride_os stride_om "
         "STEPS_PER_SPLIT").split()
for arg in sys.argv[1:]:
    tiles, warps, stages, cap, pipe = (int(v) for v in arg.split(":"))
    ncol = 8 * tiles
    layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2)
    types = ["*i32", f"tensordesc<i16[{2 * ncol}, 8],{layout!r}>", "*u8", "*i8", "*fp32"] + ["i32"] * 9
    constexprs = {"BYTES_PER_GROUP": 8, "TILES": tiles, "STAGES": stages, **twg2.offsets(tiles, stages), "PIPE": bool(pipe)}
    signature = dict(zip(names, types)) | {n: "constexpr" for n in constexprs}
    source = GluonASTSource(twg2._twg_kernel, signature=signature, constexprs=constexprs,
                            attrs={(i,): [["tt.divisibility", 16]] for i in (0, 2, 3, 4)})
    c = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": warps, **({"maxnreg": cap} if cap else {})})
    f = tempfile.mktemp(suffix=".cubin"); open(f, "wb").write(c.asm["cubin"])
    res = subprocess.check_output([path_to_cuobjdump(), "--dump-resource-usage", f], text=True)
    ins = sass_instructions(c.asm["cubin"])
    loops = innermost_loops(ins)
    sass = [t for _, t in ins]
    print(arg, "REG", re.search(r"REG:(\d+)", res).group(1), "shared", c.metadata.shared, "STL",
          sum("STL" in s for s in sass), "loops", [len(l) for l in loops],
          "HGMMA", sum("HGMMA" in s for s in sass), "WARPGROUP.DEPBAR", sum("DEPBAR" in s for s in sass),
          "ARRIVES", sum("WARPGROUP.ARRIVE" in s for s in sass))
    llir = c.asm["llir"]
    print("   expected", twg2.offsets(tiles, stages), "global_smem offsets in LLVM IR:", sorted(set(int(v) for v in re.findall(r"@global_smem, i(?:32|64) (-?\d+)", llir))))
    if len(sys.argv) == 2:
        open("scratch/s33/twg.ptx", "w").write(c.asm["ptx"])
        open("scratch/s33/twg.sass", "w").write("\n".join(sass))
