import json

import pytest

from benchmarks import common


def test_results_file_and_benchmarks_section(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# benchmarks\n\n<!-- demo:start -->\nold\n<!-- demo:end -->\n\ntail\n")
    monkeypatch.setattr(common, "BENCHMARKS_MD", md)
    rows = [{"system": "a", "tokens_per_s": 12.5}]
    claims = [common.claim("a is fast", True, "12.5 tok/s")]
    path = common.write_results("demo", "python benchmarks/demo.py", "test machine", rows, claims, ["system", "tokens_per_s"])
    result = json.loads(path.read_text())
    assert set(result) == {"benchmark", "command", "date", "machine", "rows", "claims"}
    assert result["claims"] == [{"claim": "a is fast", "holds": True, "evidence": "12.5 tok/s"}]
    text = md.read_text()
    assert "old" not in text and "| a | 12.5 |" in text and text.endswith("tail\n")
    common.write_results("demo", "cmd", "m", rows, claims, ["system"], quick=True)
    assert (tmp_path / "demo.quick.json").is_file() and md.read_text() == text  # quick runs leave the table


@pytest.mark.slow
def test_ar_engine_quick_run():
    from benchmarks.ar_engine import main

    assert main(["--quick"]) == 0
