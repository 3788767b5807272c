"""Learning regression: the tiny preset, trained a fixed number of steps on fixed text, must reach a bound.

A change that breaks learning (a flipped vote sign, a rule that never steps, a
broken hook) leaves the held-out loss near its start (9.4-10.0 bits per byte for the
random init) and fails here; so does a model that learns only byte frequencies
(the unigram entropy of the text is 4.26 bits per byte).

The text is generated in this file (a fixed word list driven by a linear
congruential generator), so it does not depend on the Python version or on files
outside the repository. How the bound was chosen: see ``BOUND_BITS_PER_BYTE``.
"""

from __future__ import annotations

from ternary.model import preset
from ternary.training import TrainOptions, train

WORDS = (
    "the of and to in is that it was for on are as with his they at be this have from or one had by word but "
    "not what all were we when your can said there use an each which she do how their if will up other about out "
    "many then them these so some her would make like him into time has look two more write go see number no way"
).split()
TEXT_BYTES = 48_000
STEPS = 60
CONTEXT = 32
BATCH = 8
# How the bound was chosen: with UpdateRule() = (theta_t 16, theta_e 64, E in [-24, 8],
# bias_step 64) and the model of commit 2016063 (fixed-RMS logits), CPU, torch reference
# backend, this test measured 3.113 / 3.045 / 3.116 bits per byte for seeds 0 / 1 / 2
# (18-22 s each on one thread). Bound = worst seed + 0.68 (about 20%), which leaves room for
# other BLAS libraries and CPUs to take other trajectories, and stays below the unigram
# entropy (4.26), so learning only byte frequencies fails. Re-measure when the defaults change.
BOUND_BITS_PER_BYTE = 3.8


def fixed_text(size: int = TEXT_BYTES) -> bytes:
    """Sentences of 4-11 words from :data:`WORDS`, chosen by a 32-bit LCG (same bytes everywhere)."""
    state, out, length = 12345, [], 0
    while length < size:
        count = 4
        words = []
        state = (1103515245 * state + 12345) % 2**31
        count += state % 8
        for _ in range(count):
            state = (1103515245 * state + 12345) % 2**31
            words.append(WORDS[(state >> 8) % len(WORDS)])
        sentence = " ".join(words).capitalize() + ".\n"
        out.append(sentence)
        length += len(sentence)
    return "".join(out).encode()[:size]


def run_training(path, steps: int, *, seed: int = 0):
    options = TrainOptions(
        config=preset("tiny"), data=str(path), ctx=CONTEXT, batch=BATCH, steps=steps, eval_every=steps,
        eval_batches=4, seed=seed, progress=False,
    )
    return train(options)


def test_fixed_text_is_fixed():
    text = fixed_text()
    assert len(text) == TEXT_BYTES and text.startswith(fixed_text(100))
    assert text.count(b".\n") > 1000


def test_tiny_preset_reaches_the_bits_per_byte_bound(tmp_path, one_thread):
    path = tmp_path / "fixed.txt"
    path.write_bytes(fixed_text())
    summary = run_training(path, STEPS)
    (first_step, _), (last_step, final) = summary.validation[0], summary.validation[-1]
    assert (first_step, last_step) == (0, STEPS)
    assert final < BOUND_BITS_PER_BYTE, summary.validation
