import sys
sys.path.insert(0, "tests")
import test_launches_per_call as t
from benchmarks.graph_nodes import nodes_per_call
for path, shape, m, count in t.CASES:
    print(path, shape, m, count, nodes_per_call(t.PATHS[path](t._layer(*shape), m)), flush=True)
