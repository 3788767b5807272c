import sys, os, re, importlib, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
sys.path.insert(0, "scratch/tgemv"); sys.path.insert(0, "scratch/tmma")
m = importlib.import_module(os.environ.get("MOD", "ternary.kernels.linear.triton_tiled_gemv"))
for spec in sys.argv[1:]:
    bpg, rpt, warps, unroll = (int(v) for v in (spec + ",-1").split(",")[:4])
    names = "tab_ptr t_ptr e_ptr out_ptr N ROWS CHUNKS WORDS STEPS stride_os STEPS_PER_SPLIT".split()
    types = ["*fp32", "*u8", "*i8", "*fp32"] + ["i32"] * 7
    constexprs = dict(BYTES_PER_GROUP=bpg, RPT=rpt) | ({} if unroll < 0 else {"UNROLL": bool(unroll)})
    src = GluonASTSource(m._tiled_gemv_kernel, signature=dict(zip(names, types)) | {k: "constexpr" for k in constexprs},
                         constexprs=constexprs, attrs={(i,): [["tt.divisibility", 16]] for i in range(4)})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    sass = c.asm["sass"]
    out = f"scratch/tgemv/{os.environ.get('MOD', 'prod')}_{spec.replace(',', '_')}.sass"
    open(out, "w").write(sass)
    print(spec, "maxreg", max([int(v) for v in re.findall(r"\bR(\d+)\b", sass)] or [0]) + 1, "spills",
          sass.count("STL"), "smem", c.metadata.shared, out)
