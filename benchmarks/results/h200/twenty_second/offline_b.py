import sys, time, re, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
sys.path.insert(0, "scratch/int8")
import int8_swar as m
for spec in sys.argv[1:]:
    bpg, rpt, warps = (int(v) for v in spec.split(","))
    names = "xw_ptr xs_ptr t_ptr e_ptr out_ptr N ROWS CHUNKS WORDS STEPS stride_os STEPS_PER_SPLIT".split()
    types = ["*i32", "*fp32", "*u8", "*i8", "*fp32"] + ["i32"] * 7
    constexprs = dict(BYTES_PER_GROUP=bpg, RPT=rpt)
    signature = dict(zip(names, types)) | {k: "constexpr" for k in constexprs}
    src = GluonASTSource(m._swar_kernel, signature=signature, constexprs=constexprs,
                         attrs={(i,): [["tt.divisibility", 16]] for i in range(0, 5)})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    sass = c.asm["sass"]
    open(f"scratch/int8/b_{bpg}_{rpt}_{warps}.sass", "w").write(sass)
    s = sass.index("LBB0_") if False else 0
    print(spec, "maxreg", max([int(v) for v in re.findall(r"\bR(\d+)\b", sass)] or [0]) + 1,
          "spills", sass.count("STL") + sass.count("LDL"), "lines", sass.count("\n"), "lds", sass.count("LDS"),
          "idp", sass.count("IDP"), flush=True)
