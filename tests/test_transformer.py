import pytest
import torch

from tests.conftest import tiny_transformer
from zoo.ar import ARTransformer


@pytest.mark.parametrize("kwargs,message", [
    (dict(hidden_size=64, num_heads=5), "not divisible by num_heads=5"),
    (dict(num_heads=4, num_kv_heads=3), "not a multiple of num_kv_heads=3"),
    (dict(position_embedding="alibi"), "position_embedding='alibi'"),
    (dict(attention="sliding"), "attention='sliding'"),
    (dict(grid_size=None, seq_len=None), "pass seq_len"),
    (dict(grid_size=None, seq_len=16), "needs grid_size"),
    (dict(attention="block_causal", block_sizes=[4, 4]), "block_sizes summing to seq_len=16"),
    (dict(num_prefix_tokens=0), "needs num_prefix_tokens >= 1"),
])
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_transformer(**kwargs)


def test_llamagen_presets_have_the_published_sizes():
    with torch.device("meta"):
        sizes = {s: sum(p.numel() for p in ARTransformer.llamagen(s).parameters()) / 1e6 for s in ("B", "L", "XL")}
    # LlamaGen's reported 111M / 343M / 775M
    assert sizes["B"] == pytest.approx(111, abs=1.5) and sizes["L"] == pytest.approx(343, abs=2)
    assert sizes["XL"] == pytest.approx(775, abs=3)
    with pytest.raises(ValueError, match="unknown LlamaGen size"):
        ARTransformer.llamagen("M")


def test_attention_masks():
    causal = tiny_transformer(num_classes=0, position_embedding="rope_1d", grid_size=None, seq_len=4,
                              num_prefix_tokens=1).attention_mask(5)[0, 0]
    assert torch.equal(causal, torch.tril(torch.ones(5, 5, dtype=torch.bool)))
    block = tiny_transformer(attention="block_causal", block_sizes=[1, 3, 12]).attention_mask(6)[0, 0]
    # prefix | 1 | 3 (positions 2..4 see each other) | 12...
    assert block[2, 4] and block[4, 2] and not block[1, 2] and block[2, 1]
    assert tiny_transformer(attention="bidirectional").attention_mask(6).all()
    padded = tiny_transformer().attention_mask(3, prefix_mask=torch.tensor([[False], [True]]))
    assert not padded[0, 0, 2, 0] and padded[0, 0, 0, 0] and padded[1, 0, 2, 0]


def test_bidirectional_model_sees_the_future():
    model = tiny_transformer(attention="bidirectional")
    ids = torch.randint(0, 64, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 64
    with torch.no_grad():
        a, b = model(ids, class_labels=[2]), model(changed, class_labels=[2])
    assert not torch.allclose(a[:, 0], b[:, 0])  # the first position depends on the last
    causal = tiny_transformer()
    with torch.no_grad():
        assert torch.allclose(causal(ids, class_labels=[2])[:, :-1], causal(changed, class_labels=[2])[:, :-1])


def test_continuous_inputs():
    model = tiny_transformer(input_dim=8)
    with torch.no_grad():
        logits = model(torch.randn(2, 5, 8), class_labels=[1, 2])
    assert logits.shape == (2, 6, 64)


def test_forward_validates_inputs(tiny_model):
    with pytest.raises(ValueError, match="out of range"):
        tiny_model(torch.tensor([[1, 64]]), class_labels=[1])
    with pytest.raises(ValueError, match="expects a condition prefix"):
        tiny_model(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="exceeds the context of 17"):
        tiny_model(torch.zeros(1, 17, dtype=torch.long), class_labels=[1])
    with pytest.raises(ValueError, match="exactly one of"):
        tiny_model.embed_condition(class_labels=[1], prefix_ids=torch.tensor([[1]]))


def test_class_dropout_only_in_training():
    model = tiny_transformer(class_dropout_prob=1.0)
    null = model.class_embedding.weight[10]
    assert not torch.allclose(model.embed_condition(class_labels=[3])[0, 0], null)
    model.train()
    assert torch.allclose(model.embed_condition(class_labels=[3])[0, 0], null)


def test_save_load_round_trip(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ARTransformer.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded(ids, class_labels=[1, 2]), tiny_model(ids, class_labels=[1, 2]))
    assert loaded.config.grid_size == [4, 4]


def test_cpu_linear_kernels_agree_and_the_choice_can_be_overridden(monkeypatch):
    import importlib

    lin = importlib.import_module("zoo.nn.linear")
    x, weight, bias = torch.randn(3, 5, 64), torch.randn(96, 64), torch.randn(96)
    expected = torch.nn.functional.linear(x, weight, bias)
    modes = lin.MODES if lin.HAS_ONEDNN else ("mkl",)
    with torch.no_grad():
        for mode in modes:
            with lin.cpu_kernel(mode):
                torch.testing.assert_close(lin.linear(x, weight, bias), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="mode must be"):
        with lin.cpu_kernel("blas"):
            pass
    monkeypatch.setenv("ZOO_CPU_LINEAR", "mkl")
    assert lin._kernel_mode() == "mkl"
    monkeypatch.setenv("ZOO_CPU_LINEAR", "blas")
    with pytest.raises(ValueError, match="ZOO_CPU_LINEAR"):
        lin._kernel_mode()


def test_cpu_linear_choice_is_measured_once_per_shape_and_only_for_few_rows(monkeypatch):
    import importlib

    lin = importlib.import_module("zoo.nn.linear")
    if not lin.HAS_ONEDNN:
        pytest.skip("this PyTorch build has no oneDNN linear")
    timed = []
    fake = {"mkl": 1.0, "onednn": 0.5}  # oneDNN measured twice as fast: it is chosen

    def time_kernels(*key):
        timed.append(key)
        return fake

    monkeypatch.setattr(lin, "_CHOICES", {})
    monkeypatch.setattr(lin, "time_kernels", time_kernels)
    monkeypatch.setattr(lin, "MEASURED_WEIGHT", 48 * 32)
    weight = torch.randn(48, 32)
    with torch.no_grad(), lin.cpu_kernel("auto"):
        for rows in (3, 4, 3):  # 3 and 4 rows share the bucket of 4
            lin.linear(torch.randn(rows, 32), weight)
        lin.linear(torch.randn(lin.MEASURED_ROWS + 1, 32), weight)  # compute-bound: F.linear, not timed
        lin.linear(torch.randn(3, 16), torch.randn(48, 16))  # a weight under MEASURED_WEIGHT: not timed
        fake = {"mkl": 1.0, "onednn": 0.95}  # within MIN_GAIN: PyTorch's default is kept
        lin.linear(torch.randn(1, 1, 32), weight)  # [1, 1, 32]: one row
    assert timed == [(4, 48, 32, False, False), (1, 48, 32, False, False)]  # eager code: no generated loop
    assert lin.kernel_table() == {(4, 48, 32, False, False): "onednn", (1, 48, 32, False, False): "mkl"}


def test_compiled_code_takes_the_generated_loop_only_when_it_is_measured_clearly_faster(monkeypatch):
    import importlib

    lin = importlib.import_module("zoo.nn.linear")
    monkeypatch.setattr(lin, "_CHOICES", {})
    cases = {  # timings -> the kernel kept: a kernel must beat the one chosen so far by MIN_GAIN
        (1, 64, 32, False, True): ({"mkl": 1.0, "onednn": 0.5, "reduce": 0.25}, "reduce"),
        (2, 64, 32, False, True): ({"mkl": 1.0, "onednn": 0.5, "reduce": 0.48}, "onednn"),
        (4, 64, 32, False, True): ({"mkl": 1.0, "onednn": 0.95, "reduce": 0.85}, "reduce"),
        (8, 64, 32, False, True): ({"mkl": 1.0, "reduce": 0.95}, "mkl"),  # no oneDNN in this build
    }
    monkeypatch.setattr(lin, "time_kernels", lambda *key: cases[key][0])
    for key, (_, kernel) in cases.items():
        assert lin._measured_kernel(*key) == kernel
    assert lin.kernel_table() == {key: kernel for key, (_, kernel) in cases.items()}


def test_the_generated_loop_compiles_to_the_product(monkeypatch):
    """Real inductor (seconds): `linear` traced with the generated loop chosen, and its measurement probe."""
    import importlib
    import shutil

    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        pytest.skip("torch.compile's CPU backend needs a C++ compiler (apt-get install g++)")
    lin = importlib.import_module("zoo.nn.linear")
    x, weight, bias = torch.randn(2, 1, 40), torch.randn(24, 40), torch.randn(24)
    monkeypatch.setattr(lin, "_CHOICES", {(2, 24, 40, True, True): "reduce"})
    monkeypatch.setattr(lin, "MEASURED_WEIGHT", 1)
    with torch.no_grad(), lin.cpu_kernel("auto"):
        compiled = torch.compile(lambda x: lin.linear(x, weight, bias), fullgraph=True)
        torch.testing.assert_close(compiled(x), torch.nn.functional.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    seconds = lin.time_kernels(1, 24, 40, compiled=True)
    assert set(seconds) >= {"mkl", "reduce"} and all(s > 0 for s in seconds.values())
    assert "reduce" not in lin.time_kernels(lin.REDUCE_ROWS + 1, 24, 40, compiled=True)


def test_time_kernels_times_both_kernels_and_checks_its_shape():
    import importlib

    lin = importlib.import_module("zoo.nn.linear")
    if not lin.HAS_ONEDNN:
        pytest.skip("this PyTorch build has no oneDNN linear")
    seconds = lin.time_kernels(2, 16, 8, bias=True)
    assert set(seconds) == {"mkl", "onednn"} and all(s > 0 for s in seconds.values())
    with pytest.raises(ValueError, match="must be >= 1"):
        lin.time_kernels(0, 16, 8)


def test_a_model_without_a_head():
    model = tiny_transformer(vocab_size=0, input_vocab_size=64)
    assert model.head is None and not any("head" in k for k in model.state_dict())
    hidden = model.forward_hidden(model.embed_inputs(torch.randint(0, 64, (1, 5))))
    assert hidden.shape == (1, 5, 64)
    with pytest.raises(ValueError, match="no output head"):
        model.logits(hidden)
    with pytest.raises(ValueError, match="needs input_vocab_size"):
        tiny_transformer(vocab_size=0)
    with pytest.raises(ValueError, match="vocab_size=-1"):
        tiny_transformer(vocab_size=-1)
