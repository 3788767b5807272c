import sys, os, re, triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
sys.path.insert(0, "scratch/tmma")
import twg as m
for spec in sys.argv[1:]:
    bpg, tiles, warps, layout, asyn = (int(v) for v in spec.split(","))
    names = "image_ptr t_ptr e_ptr out_ptr M N BLOCKS CHUNKS EWORDS STEPS stride_os stride_om STEPS_PER_SPLIT".split()
    types = ["*i32", "*u8", "*i8", "*fp32"] + ["i32"] * 9
    constexprs = dict(BYTES_PER_GROUP=bpg, TILES=tiles, LAYOUT=layout, ASYNC=bool(asyn))
    src = GluonASTSource(m._wg_kernel, signature=dict(zip(names, types)) | {k: "constexpr" for k in constexprs},
                         constexprs=constexprs, attrs={(i,): [["tt.divisibility", 16]] for i in range(4)})
    c = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, **({"maxnreg": int(os.environ["MAXNREG"])} if os.environ.get("MAXNREG") else {})})
    sass = c.asm["sass"]
    open(f"scratch/tmma/wg_{spec.replace(',', '_')}.ptx", "w").write(c.asm["ptx"])
    open(f"scratch/tmma/wg_{spec.replace(',', '_')}.sass", "w").write(sass)
    print(spec, "maxreg", max([int(v) for v in re.findall(r"\bR(\d+)\b", sass)] or [0]) + 1, "spills",
          sass.count("STL"), "smem", c.metadata.shared, "wgmma", sass.count("HGMMA"), "warpsync", sass.count("WARPSYNC"),
          [l.strip()[:90] for l in c.asm["ptx"].splitlines() if "st.shared" in l and "33792" in l][:2], flush=True)
