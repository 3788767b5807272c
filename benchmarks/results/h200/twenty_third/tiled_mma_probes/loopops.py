import re, sys, collections
for f in sys.argv[1:]:
    s = open(f).read().splitlines()
    # the loop: the largest block between a label and a backward branch to it
    labels = {l.strip()[:-1]: i for i, l in enumerate(s) if re.match(r"^\s*\.?L\w*:$", l.strip()) or re.match(r"^LBB\d+:$", l.strip())}
    best = (0, 0, 0)
    for i, l in enumerate(s):
        m = re.search(r"BRA\s+(\w+);", l)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            if i - labels[m.group(1)] > best[1] - best[0]:
                best = (labels[m.group(1)], i)
    body = s[best[0] + 1:best[1] + 1]
    ops = collections.Counter()
    for l in body:
        m = re.search(r"\t(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", l)
        if m: ops[m.group(1)] += 1
    print(f, "loop", sum(ops.values()), dict(ops.most_common()))
