"""Outputs of ``train_compare``: CSV of the validation curves, JSON summary, PNG plot, table.

    python -m benchmarks.train_compare_report runs/train-compare/train_compare.json   # the table again
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

CSV_FIELDS = ("arm", "step", "tokens", "val_bits_per_byte")


def write_outputs(out: Path, results: list[Any], summary: dict[str, Any]) -> None:
    """``train_compare.csv``, ``train_compare.json`` and (with matplotlib) ``train_compare.png`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train_compare.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        for result in results:
            for step, tokens, bits in result.curve:
                writer.writerow((result.arm, step, tokens, f"{bits:.5f}"))
    (out / "train_compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(out / "train_compare.png", summary)


def plot(path: Path, summary: dict[str, Any]) -> bool:
    """Validation bits per byte over training tokens, one line per arm; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for arm, values in summary["arms"].items():
        _, tokens, bits = zip(*values["curve"])
        axes.plot(tokens, bits, marker="o", markersize=3, label=arm)
    env = summary["environment"]
    device = env.get("device_name", env["device"])
    axes.set_title(f"{Path(summary['corpus']).name[:40]} - {summary['steps']} steps - {device}", fontsize=9)
    axes.set_xlabel("training tokens (bytes)")
    axes.set_ylabel("validation bits per byte")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _knobs(summary: dict[str, Any]) -> list[str]:
    """One line: the ternary rule and the AdamW settings of the run (older summaries may lack them)."""
    rule, adamw = summary.get("rule"), summary.get("adamw")
    parts = []
    if rule:
        parts.append(f"ternary rule theta_t {rule['theta_t']}, theta_e {rule['theta_e']}, "
                     f"E in [{rule['e_min']}, {rule['e_max']}], bias_step {rule['bias_step']}")
    if adamw:
        parts.append(f"AdamW lr {adamw['lr']:g}, warm-up {adamw['warmup']}")
    if summary.get("dtype"):
        parts.append(f"{summary['dtype']} activations")
    return ["; ".join(parts)] if parts else []


def format_table(summary: dict[str, Any]) -> str:
    """Short table: final validation bpb (and ratio to STE), tokens/s, peak memory, state bytes per weight."""
    arms = summary["arms"]
    ste = arms.get("ste")
    lines = [
        f"corpus {summary['corpus']}; {summary['steps']} steps x {summary['tokens_per_step']} tokens; "
        f"{summary['environment'].get('device_name', summary['environment']['device'])}",
        *_knobs(summary),
        f"{'arm':8} {'val bpb':>8} {'/ste':>6} {'tok/s':>9} {'peak MiB':>9} {'state B/w':>9} {'/ste':>6}",
    ]
    for arm, v in arms.items():
        peak = v["peak_memory_bytes"] / 2**20 if v["peak_memory_bytes"] is not None else None
        bits_ratio = v["final_val_bits_per_byte"] / ste["final_val_bits_per_byte"] if ste else None
        state_ratio = v["state_bytes_per_weight"] / ste["state_bytes_per_weight"] if ste else None
        lines.append(
            f"{arm:8} {v['final_val_bits_per_byte']:8.4f} {_number(bits_ratio, '6.3f')} "
            f"{_number(v['steady_tokens_per_second'], '9.0f')} {_number(peak, '9.1f')} "
            f"{v['state_bytes_per_weight']:9.3f} {_number(state_ratio, '6.3f')}"
        )
    lines += [f"{arm:8} FAILED: {message}" for arm, message in summary.get("failed", {}).items()]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.train_compare_report PATH/train_compare.json")
    print(format_table(json.loads(Path(sys.argv[1]).read_text())))
