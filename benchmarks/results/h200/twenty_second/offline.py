import sys, time, re, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
sys.path.insert(0, "scratch/int8")
import int8_gemv as m

CH = 2
def compile_one(bpg, rpt, warps):
    names = "xw_ptr xs_ptr t_ptr e_ptr out_ptr N ROWS CHUNKS WORDS STEPS stride_os STEPS_PER_SPLIT".split()
    types = ["*i32", "*fp32", "*u8", "*i8", "*fp32"] + ["i32"] * 7
    constexprs = dict(BYTES_PER_GROUP=bpg, RPT=rpt, POISON=True, CHAINS=CH)
    signature = dict(zip(names, types)) | {k: "constexpr" for k in constexprs}
    src = GluonASTSource(m._int8_gemv_kernel, signature=signature, constexprs=constexprs,
                         attrs={(i,): [["tt.divisibility", 16]] for i in range(0, 5)})
    t = time.time()
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    sass = c.asm["sass"]
    open(f"scratch/int8/k_{bpg}_{rpt}_{warps}.sass", "w").write(sass)
    open(f"scratch/int8/k_{bpg}_{rpt}_{warps}.ptx", "w").write(c.asm["ptx"])
    open(f"scratch/int8/k_{bpg}_{rpt}_{warps}.ttgir", "w").write(c.asm["ttgir"])
    print(bpg, rpt, warps, "maxreg", max([int(v) for v in re.findall(r"\bR(\d+)\b", sass)] or [0]) + 1,
          "spills", sass.count("STL") + sass.count("LDL"), "lines", sass.count("\n"), "lds", sass.count("LDS"),
          "dp4a", sass.count("IDP4A"), "smem", c.metadata.shared, "%.0fs" % (time.time() - t), flush=True)

for spec in sys.argv[1:]:
    if spec.startswith("chains="):
        CH = int(spec[7:]); continue
    compile_one(*(int(v) for v in spec.split(",")))
