import json

import numpy as np
import pytest

from tests.conftest import FIXTURES
from zoo.cli import build_parser, main


def test_list_and_info(capsys):
    assert main(["list", "--json"]) == 0
    names = [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert "llamagen-gpt-b-256" in names
    assert main(["info", "llamagen-gpt-b-256"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["repo_id"] == "FoundationVision/LlamaGen" and info["files"] == {"c2i_B_256.pt": None}
    assert main(["info", "no-such-model"]) == 2


def test_convert_then_generate(tmp_path, capsys):
    out = tmp_path / "converted"
    assert main(["convert", "llamagen-gpt", "--checkpoint", str(FIXTURES / "gpt_c2i_tiny.pt"),
                 "--num-heads", "4", "--image-size", "64", "--out", str(out)]) == 0
    assert (out / "model_index.json").is_file()
    assert main(["generate", str(out), "--class", "3", "--class", "5", "--seed", "1",
                 "--out", str(tmp_path / "tokens.npy")]) == 0
    tokens = np.load(tmp_path / "tokens.npy")
    assert tokens.shape == (2, 16) and tokens.max() < 64
    assert main(["generate", str(out), "--prompt", "a cat", "--out", str(tmp_path / "t.npy")]) == 2
    assert "does not take ['prompt']" in capsys.readouterr().err


def test_every_benchmark_is_a_bench_command():
    """`zoo bench NAME` reaches every benchmark script with a main(argv) (figures.py only redraws results)."""
    import importlib
    from pathlib import Path

    from zoo.cli import BENCHMARKS

    scripts = {p.stem for p in Path(importlib.import_module("benchmarks").__file__).parent.glob("*.py")
               if "def main(argv" in p.read_text() and p.stem != "figures"}
    assert {module.split(".")[1] for module in BENCHMARKS.values()} == scripts


def test_unknown_things_are_clear_errors(capsys):
    assert main(["bench", "nope"]) == 2
    assert main(["train", "nope"]) == 2
    assert main(["convert", "nope", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "available: ar-engine, c2i, codec, ctf, distilled, flextok, gpu-engine, image-tokenizer" in err and "unknown recipe" in err and "llamagen-gpt" in err


@pytest.mark.parametrize("command", ["list", "info", "generate", "tokenize", "train", "convert", "bench"])
def test_every_subcommand_has_help(command):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0


def test_convert_llamagen_dd(tmp_path):
    from zoo.ar.distilled import DDTransformer

    out = tmp_path / "dd"
    assert main(["convert", "llamagen-dd", "--checkpoint", str(FIXTURES / "dd_llamagen_tiny.pt"),
                 "--num-heads", "4", "--image-size", "64", "--out", str(out)]) == 0
    model = DDTransformer.from_pretrained(out)
    assert model.config.codebook_dim == 8 and model.backbone.config.num_layers == 2
