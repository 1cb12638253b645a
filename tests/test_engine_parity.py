"""The engine against reference computations: LlamaGen's official outputs and HF transformers' Llama."""

import math

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import FIXTURES
from weights_registry.converters import convert_llamagen_gpt, hf_llama_to_zoo
from zoo.nn.rope import apply_rope, rope_1d, rope_2d, rope_rotation


@pytest.fixture(scope="module")
def llamagen():
    model = convert_llamagen_gpt(FIXTURES / "gpt_c2i_tiny.pt", num_heads=4, grid_size=4)
    return model, load_file(FIXTURES / "gpt_c2i_tiny_io.safetensors")


def test_2d_rope_matches_llamagen_table(llamagen):
    model, io = llamagen
    assert torch.equal(model._rope, io["freqs_cis"])  # zero row for the class token, then the 4x4 grid


def test_2d_rope_formula():
    """Row angle on the first head_dim/4 pairs, column angle on the last, frequencies of a dim-head_dim/2 RoPE."""
    h, w, head_dim, base = 3, 5, 16, 10000.0
    table = rope_2d(h, w, head_dim, base)
    for r in range(h):
        for c in range(w):
            for i in range(head_dim // 4):
                freq = base ** (-2 * i / (head_dim // 2))
                for j, pos in ((i, r), (i + head_dim // 4, c)):
                    expected = (math.cos(pos * freq), math.sin(pos * freq))
                    assert table[r * w + c, j].tolist() == pytest.approx(expected, abs=1e-6)


def test_rope_complex_and_real_forms_agree(monkeypatch):
    x, table = torch.randn(2, 6, 3, 16), rope_1d(6, 16)
    eager = apply_rope(x, rope_rotation(table))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # the form inductor traces
    assert torch.allclose(apply_rope(x, rope_rotation(table)), eager, atol=1e-6)


def test_llamagen_logits_full_sequence(llamagen):
    model, io = llamagen
    logits = model(io["image_tokens"][:, :-1], class_labels=io["class_labels"])
    assert torch.allclose(logits, io["logits"], atol=1e-4)


def test_llamagen_logits_through_kv_cache(llamagen):
    """Prefill on the class token, then one token per step: LlamaGen's own generate path."""
    model, io = llamagen
    model.setup_cache(3, 17)
    with torch.no_grad():
        h = model.forward_hidden(model.embed_condition(class_labels=io["class_labels"]), torch.arange(1))
        steps = [model.logits(h)]
        for k in range(15):
            h = model.forward_hidden(model.embed_inputs(io["image_tokens"][:, k:k + 1]), torch.tensor([k + 1]))
            steps.append(model.logits(h))
    model.clear_cache()
    assert torch.allclose(torch.cat(steps, 1), io["logits"], atol=1e-4)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_logits_match_hf_llama(kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                         tie_word_embeddings=False, rope_theta=5000.0)
    hf = LlamaForCausalLM(config).eval()
    zoo_model = hf_llama_to_zoo(hf, num_prefix_tokens=4)
    ids = torch.randint(0, 128, (2, 20))
    with torch.no_grad():
        expected = hf(ids).logits
        assert torch.allclose(zoo_model(ids[:, 4:], prefix_ids=ids[:, :4]), expected, atol=1e-4)
        # and through the cache: prefill the prompt, then token by token
        zoo_model.setup_cache(2, 20)
        got = [zoo_model.logits(zoo_model.forward_hidden(zoo_model.embed_inputs(ids[:, :4]), torch.arange(4)))]
        for t in range(4, 20):
            got.append(zoo_model.logits(zoo_model.forward_hidden(zoo_model.embed_inputs(ids[:, t:t + 1]),
                                                                 torch.tensor([t]), kv_len=t + 1)))
    assert torch.allclose(torch.cat(got, 1), expected, atol=1e-4)


def test_tied_hf_embeddings_convert():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, tie_word_embeddings=True)
    hf = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 32, (1, 8))
    with torch.no_grad():
        assert torch.allclose(hf_llama_to_zoo(hf)(ids), hf(ids).logits, atol=1e-4)
