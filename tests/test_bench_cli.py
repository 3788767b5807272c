"""``ternary bench kernels`` option parsing (the benchmark itself needs a GPU: ``run`` is replaced)."""

from __future__ import annotations

from click.testing import CliRunner

import benchmarks.kernels
from apps.cli import main


def _invoke(monkeypatch, args):
    seen = {}

    def fake_run(config, out):
        seen["config"] = config
        return {}

    monkeypatch.setattr(benchmarks.kernels, "run", fake_run)
    monkeypatch.setattr(benchmarks.kernels, "format_table", lambda report: "table")
    return CliRunner().invoke(main, ["bench", "kernels", *args]), seen


def test_update_rows_none_skips_the_update_and_rows_parse(monkeypatch, tmp_path):
    result, seen = _invoke(monkeypatch, ["--rows", "16,128", "--update-rows", "none", "--shapes", "4096x14336",
                                         "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = seen["config"]
    assert config.update_rows == () and config.rows == (16, 128) and config.shapes == ((4096, 14336),)


def test_bad_row_lists_name_the_option_and_what_was_given(monkeypatch, tmp_path):
    result, seen = _invoke(monkeypatch, ["--rows", "none", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "'none': expected a comma list of integers" in result.output
    assert "--rows" in result.output and "config" not in seen
    result, _ = _invoke(monkeypatch, ["--update-rows", "8k", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "'8k'" in result.output and "or none" in result.output
    assert "--update-rows" in result.output
    result, _ = _invoke(monkeypatch, ["--shapes", "4096by4096", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--shapes" in result.output
