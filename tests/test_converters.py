import argparse

import pytest
import torch

from tests.conftest import FIXTURES
from weights_registry.converters import convert_llamagen_gpt
from weights_registry.converters.llamagen import llamagen_gpt_keys


def llamagen_b_state_dict():
    """A state dict with the exact key names and shapes of LlamaGen's c2i_B_256.pt (GPT-B, 111M)."""
    d, hidden = 768, 2048  # find_multiple(int(2 * 4 * 768 / 3), 256)
    shapes = {"cls_embedding.embedding_table.weight": (1001, d), "tok_embeddings.weight": (16384, d),
              "norm.weight": (d,), "output.weight": (16384, d)}
    for i in range(12):
        shapes |= {f"layers.{i}.attention.wqkv.weight": (3 * d, d), f"layers.{i}.attention.wo.weight": (d, d),
                   f"layers.{i}.feed_forward.w1.weight": (hidden, d), f"layers.{i}.feed_forward.w3.weight": (hidden, d),
                   f"layers.{i}.feed_forward.w2.weight": (d, hidden), f"layers.{i}.attention_norm.weight": (d,),
                   f"layers.{i}.ffn_norm.weight": (d,)}
    assert set(shapes) == set(llamagen_gpt_keys(12))
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}


def test_llamagen_b_checkpoint_converts_with_its_shapes():
    sd = llamagen_b_state_dict()
    model = convert_llamagen_gpt({"model": sd, "steps": 0})
    c = model.config
    assert (c.num_layers, c.num_heads, c.hidden_size, c.vocab_size, c.num_classes) == (12, 12, 768, 16384, 1000)
    assert tuple(c.grid_size) == (16, 16) and sum(p.numel() for p in model.parameters()) == pytest.approx(111e6, rel=0.01)
    got = model.state_dict()
    assert torch.equal(got["blocks.3.mlp.gate_up.weight"][:2048], sd["layers.3.feed_forward.w1.weight"])
    assert torch.equal(got["blocks.3.mlp.gate_up.weight"][2048:], sd["layers.3.feed_forward.w3.weight"])
    assert torch.equal(got["class_embedding.weight"], sd["cls_embedding.embedding_table.weight"])


def test_ema_weights_are_preferred():
    sd = torch.load(FIXTURES / "gpt_c2i_tiny.pt", weights_only=True)["model"]
    ema = {k: v + 1 for k, v in sd.items()}
    model = convert_llamagen_gpt({"model": sd, "ema": ema}, num_heads=4, grid_size=4)
    assert torch.equal(model.norm.weight, ema["norm.weight"])


def test_checkpoint_file_with_training_args_loads_safely(tmp_path):
    sd = torch.load(FIXTURES / "gpt_c2i_tiny.pt", weights_only=True)["model"]
    path = tmp_path / "c2i.pt"
    torch.save({"model": sd, "args": argparse.Namespace(gpt_model="GPT-tiny"), "steps": 5}, path)
    assert convert_llamagen_gpt(path, num_heads=4, grid_size=4).config.num_layers == 2


def test_wrong_checkpoints_fail_with_the_keys():
    sd = torch.load(FIXTURES / "gpt_c2i_tiny.pt", weights_only=True)["model"]
    broken = dict(sd)
    del broken["layers.1.ffn_norm.weight"]
    broken["layers.1.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: \['layers.1.ffn_norm.weight'\]") as err:
        convert_llamagen_gpt({"model": broken}, num_heads=4, grid_size=4)
    assert "layers.1.extra.weight" in str(err.value)
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        convert_llamagen_gpt({"model": sd}, num_heads=3, grid_size=4)
    with pytest.raises(ValueError, match="has shape"):
        convert_llamagen_gpt({"model": {**sd, "norm.weight": torch.ones(32)}}, num_heads=4, grid_size=4)
    with pytest.raises(ValueError, match="pass num_heads explicitly"):
        convert_llamagen_gpt({"model": sd}, grid_size=4)
    with pytest.raises(ValueError, match="text-to-image"):
        convert_llamagen_gpt({"model": {**sd, "cls_embedding.cap_proj.fc1.weight": torch.zeros(1)}}, num_heads=4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_llamagen_gpt("/nonexistent/c2i_B_256.pt")


def test_llamagen_dd_converter_reproduces_the_official_forward():
    from safetensors.torch import load_file

    from weights_registry.converters.llamagen import convert_llamagen_dd

    model = convert_llamagen_dd(FIXTURES / "dd_llamagen_tiny.pt", num_heads=4, grid_size=4).eval()
    io = load_file(FIXTURES / "dd_llamagen_tiny_io.safetensors")
    codes, logits = model(io["x"], io["class_labels"], io["timestep"])
    torch.testing.assert_close(codes, io["tokens"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, io["logits"], atol=1e-4, rtol=1e-4)


def test_llamagen_dd_b_checkpoint_converts_with_its_shapes():
    from weights_registry.converters.llamagen import convert_llamagen_dd, llamagen_dd_keys

    sd = llamagen_b_state_dict()
    del sd["tok_embeddings.weight"]
    gen = torch.Generator().manual_seed(1)
    extra = {"tok_embeddings.weight": (768, 8), "tok_embeddings.bias": (768,), "n_d_embed.weight": (2, 768),
             "final_layer_conti.linear.weight": (8, 768), "final_layer_conti.linear.bias": (8,),
             "final_layer_conti.scale_shift_table": (2, 768)}
    sd |= {k: torch.randn(s, generator=gen) for k, s in extra.items()}
    assert set(sd) == set(llamagen_dd_keys(12))
    model = convert_llamagen_dd({"ema": sd, "model": {}})
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(98.3e6, rel=0.01)  # the paper's 98.3M
    assert torch.equal(model.continuous_head.scale_shift_table, sd["final_layer_conti.scale_shift_table"])
    assert torch.equal(model.backbone.input_proj.bias, sd["tok_embeddings.bias"])
    del sd["n_d_embed.weight"]
    with pytest.raises(ValueError, match=r"missing keys: \['n_d_embed.weight'\]"):
        convert_llamagen_dd({"model": sd})
