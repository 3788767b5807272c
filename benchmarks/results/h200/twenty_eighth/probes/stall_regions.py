"""Warp-stall samples of an ncu source CSV summed over code regions split at the given SASS markers."""
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr_i = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
hdr = rows[hdr_i]; data = [r for r in rows[hdr_i + 1:] if len(r) == len(hdr)]
ix = {h: i for i, h in enumerate(hdr)}
f = lambda r, k: float(r[ix[k]].replace(",", "") or 0)
stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
tot = sum(f(r, "Warp Stall Sampling (All Samples)") for r in data)
print(len(data), "instructions", tot, "samples")
step = 0x1000
base = int(data[0][0], 16)
buckets = {}
for r in data:
    b = (int(r[0], 16) - base) // step
    d = buckets.setdefault(b, [0.0, {}, set()])
    d[0] += f(r, "Warp Stall Sampling (All Samples)")
    for k in stalls:
        d[1][k] = d[1].get(k, 0) + f(r, k)
    op = [o for o in r[ix["Source"]].split() if not o.startswith("@")]
    if op:
        d[2].add(op[0].split(".")[0])
for b in sorted(buckets):
    s, st, ops = buckets[b]
    if s / tot < 0.01:
        continue
    top = sorted(((v, k) for k, v in st.items()), reverse=True)[:3]
    print(hex(b * step), f"{s / tot * 100:5.1f}%", [(k[6:], round(v / tot * 100, 1)) for v, k in top], sorted(ops & {"HGMMA", "UTMALDG", "LDS", "STG", "HSET2", "SYNCS", "BAR", "LDG"}))
