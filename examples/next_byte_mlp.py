"""A ternary MLP that learns to predict the next byte of real text (Python's own json source).

Every trainable tensor is an integer LinearState; training is value_and_hooks + update.
"""

import inspect
import json.decoder

import torch

import ternary
from ternary import LinearState, embedding, linear, update, value_and_hooks

text = torch.tensor(list(inspect.getsource(json.decoder).encode()))
gen = torch.Generator().manual_seed(0)
state = {
    "embed": LinearState.random(64, 256, bias=False, generator=gen),  # byte -> 64
    "hidden": LinearState.random(64, 64, generator=gen),
    "head": LinearState.random(64, 256, generator=gen),  # 64 -> next-byte logits
}


def loss_fn(s, prev, nxt):
    h = embedding(s["embed"], prev)
    h = h + torch.relu(linear(s["hidden"], h))
    return torch.nn.functional.cross_entropy(linear(s["head"], h), nxt)


step = value_and_hooks(loss_fn)
for i in range(201):
    idx = torch.randint(0, len(text) - 1, (256,), generator=gen)
    loss, hooks = step(state, text[idx], text[idx + 1])
    state = update(state, hooks)  # pure: returns a new integer state tree
    if i % 50 == 0:
        print(f"step {i:3d}  loss {loss.item():.3f} nats/byte")
print("float leaves in state:", len(ternary.audit(state).float_leaves))
