"""Token-Shuffle: window layout, shuffle/unshuffle layers, the window step of the shared engine."""

import pytest
import torch

from zoo.ar import generate
from zoo.ar.token_shuffle import TokenShuffleTransformer, WindowStep
from zoo.nn.token_shuffle import TokenShuffle, TokenUnshuffle, from_windows, to_windows


def tiny(window=2, **overrides):
    torch.manual_seed(0)
    config = dict(text_vocab_size=12, codebook_size=32, grid_size=(4, 6), window=window, max_text_tokens=5,
                  hidden_size=32, num_layers=2, num_heads=2)
    return TokenShuffleTransformer(**{**config, **overrides}).eval()


def test_windows_round_trip_and_layout():
    grid = torch.arange(2 * 4 * 6).view(2, 4, 6)
    windows = to_windows(grid, 2)
    assert windows.shape == (2, 6, 4)
    assert windows[0, 0].tolist() == [0, 1, 6, 7] and windows[0, 1].tolist() == [2, 3, 8, 9]
    assert windows[0, 3].tolist() == [12, 13, 18, 19]  # second row of windows
    assert torch.equal(from_windows(windows, 2, (4, 6)), grid)
    features = torch.randn(1, 8, 8, 5)  # trailing feature dims ride along
    assert torch.equal(from_windows(to_windows(features, 4), 4, (8, 8)), features)
    with pytest.raises(ValueError, match="multiples of 4"):
        to_windows(grid, 4)


def test_shuffle_concatenates_compressed_tokens_in_window_order():
    layer = TokenShuffle(16, 2, num_blocks=0)
    x = torch.randn(3, 5, 4, 16)
    out = layer(x)
    assert out.shape == (3, 5, 16)
    torch.testing.assert_close(out[..., 4:8], layer.compress(x[:, :, 1]))  # token 1 of each window, chunk 1
    unshuffle = TokenUnshuffle(16, 2)
    assert unshuffle(out).shape == (3, 5, 4, 16)
    with pytest.raises(ValueError, match="divisible by window"):
        TokenShuffle(18, 2)


def prompt(batch=2):
    ids = torch.tensor([[0, 0, 3, 4, 2]] * batch)  # left padding (0), two words, <soi> (2)
    return ids, ids != 0


@pytest.mark.parametrize("window", [1, 2])
def test_window_step_matches_teacher_forcing(window):
    """Cached window decoding == recomputation, and its distributions are the teacher-forced logits."""
    model = tiny(window)
    ids, mask = prompt()
    empty = torch.tensor([[0, 0, 0, 0, 2]] * 2)
    kwargs = dict(prefix_ids=ids, prefix_mask=mask, uncond_prefix_ids=empty, uncond_prefix_mask=empty != 0,
                  guidance_scale=1.5, step=WindowStep(model), return_probs=True)
    cached = generate(model.backbone, 24, generator=torch.Generator().manual_seed(0), **kwargs)
    recomputed = generate(model.backbone, 24, generator=torch.Generator().manual_seed(0), use_cache=False, **kwargs)
    assert torch.equal(cached.tokens, recomputed.tokens)
    grid = model.windows_to_grid(cached.tokens, (4, 6))
    assert torch.equal(model.grid_to_windows(grid), cached.tokens)
    cond, uncond = model(ids, mask, grid), model(empty, empty != 0, grid)
    forced = torch.softmax(uncond + 1.5 * (cond - uncond), -1)
    torch.testing.assert_close(cached.probs, forced, atol=1e-5, rtol=1e-4)


def test_a_window_step_emits_the_window_tokens_together():
    model = tiny(2)
    ids, mask = prompt(1)
    seen = []
    generate(model.backbone, 24, prefix_ids=ids, prefix_mask=mask, step=WindowStep(model),
             callback=lambda i, tokens: seen.append(tokens.shape[1]))
    assert seen == [4, 8, 12, 16, 20, 24]  # 6 AR steps of 4 tokens for a 4x6 grid
    with pytest.raises(ValueError, match="whole 2x2 windows"):
        generate(model.backbone, 22, prefix_ids=ids, prefix_mask=mask, step=WindowStep(model))


def test_bad_configs():
    with pytest.raises(ValueError, match="multiples of the window"):
        tiny(window=4)
    with pytest.raises(ValueError, match="window must be"):
        tiny(window=0)


def test_caption_tokenizer_covers_the_caption_language():
    from zoo.data.shapes import ShapesDataset
    from zoo.data.text import caption_tokenizer, encode_prompts

    tokenizer = caption_tokenizer()
    unk = tokenizer.convert_tokens_to_ids("[UNK]")
    data = ShapesDataset("train", size=32, length=200)
    captions = [data.spec(i).caption for i in range(200)]
    ids, mask = encode_prompts(tokenizer, captions, max_length=20)
    assert (ids != unk).all() and ids.shape == (200, 20)
    assert (ids[:, -1] == tokenizer.convert_tokens_to_ids("[SOI]")).all() and mask[:, -1].all()
    assert not mask[:, 0].any()  # left padding
    words = captions[0].split()
    assert tokenizer.convert_ids_to_tokens(ids[0, -1 - len(words):-1].tolist()) == words
    empty, empty_mask = encode_prompts(tokenizer, [""], max_length=20)
    assert empty_mask.sum() == 1  # just [SOI]
    assert (encode_prompts(tokenizer, ["a RED zebra"], 20)[0][0, -2] == unk)
    with pytest.raises(ValueError, match="at most 3"):
        encode_prompts(tokenizer, ["a small red circle"], max_length=4)
    with pytest.raises(ValueError, match="string or a non-empty list"):
        encode_prompts(tokenizer, [3], max_length=4)


@pytest.fixture(scope="module")
def pipe():
    from pipelines import TokenShufflePipeline
    from tokenizers_visual import VQModel
    from zoo.data.text import caption_tokenizer

    tokenizer = caption_tokenizer()
    torch.manual_seed(0)
    vq = VQModel(codebook_size=32, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                 decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32).eval()
    model = tiny(2, text_vocab_size=len(tokenizer), max_text_tokens=20)
    pipe = TokenShufflePipeline(transformer=model, tokenizer=tokenizer, vqvae=vq)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_pipeline_generates_and_round_trips(pipe, tmp_path):
    import zoo
    from pipelines import TokenShufflePipeline
    from zoo.ar import ConstantGuidance

    kwargs = lambda: dict(generator=torch.Generator().manual_seed(0), output_type="pt")  # noqa: E731
    images = pipe(["a red star at the top", "two blue circles"], num_images_per_prompt=2, **kwargs()).images
    assert images.shape == (4, 3, 8, 12) and 0 <= images.min() and images.max() <= 1
    for schedule in ("constant", "linear", ConstantGuidance(1.0)):
        assert pipe("a red star", cfg_schedule=schedule, **kwargs()).images.shape == (1, 3, 8, 12)
    assert pipe("a red star", height=4, width=8, **kwargs()).images.shape == (1, 3, 4, 8)  # a smaller grid
    pipe.save_pretrained(tmp_path / "ts")
    loaded = zoo.load(str(tmp_path / "ts"))
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is TokenShufflePipeline
    torch.testing.assert_close(loaded("a red star", **kwargs()).images, pipe("a red star", **kwargs()).images)


def test_compiled_decoding_gives_the_eager_images(pipe, monkeypatch):
    from tests.conftest import trace_compiled_path

    trace_compiled_path(monkeypatch, pipe.transformer.backbone)
    kwargs = lambda: dict(generator=torch.Generator().manual_seed(1), output_type="pt")  # noqa: E731
    eager = pipe(["a red star", "two blue circles"], **kwargs()).images
    compiled = pipe(["a red star", "two blue circles"], compile=True, **kwargs()).images
    assert torch.equal(eager, compiled) and pipe.transformer.backbone._compiled_decode is not None


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt=""), "must not be empty"),
    (dict(prompt=["a red star", "  "]), "must not be empty"),
    (dict(prompt=[3]), "string or a non-empty list"),
    (dict(prompt=" ".join(["red"] * 25)), "reads at most 19"),
    (dict(prompt="a red star", height=6), r"height=6 must be a positive multiple of 4"),
    (dict(prompt="a red star", height=16, width=16), "context holds 24"),
    (dict(prompt="a red star", cfg_schedule="cosine"), "cfg_schedule='cosine'"),
    (dict(prompt="a red star", guidance_scale=-1.0), "guidance_scale must be"),
])
def test_pipeline_rejects_bad_inputs(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_tokenize_with_captions_then_train(tmp_path):
    from pipelines import TokenShufflePipeline
    from tokenizers_visual import VQModel
    from zoo.cli import main as zoo_main
    from zoo.data.tokens import TokenDataset

    torch.manual_seed(0)
    vq = VQModel(codebook_size=32, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1, 1],
                 decoder_ch_mult=[1, 1, 1], num_res_blocks=1, z_channels=32)
    vq.save_pretrained(tmp_path / "vq")
    tokens = tmp_path / "shapes.safetensors"
    assert zoo_main(["tokenize", str(tmp_path / "vq"), "--num", "6", "--size", "32", "--out", str(tokens)]) == 0
    data = TokenDataset(tokens)
    assert len(data.captions) == 6 and data.captions[0].endswith("background") and data.grid == (8, 8)
    out = tmp_path / "ts"
    assert zoo_main(["train", "token-shuffle-shapes", "--tokens", str(tokens), "--vq", str(tmp_path / "vq"),
                     "--out", str(out), "--steps", "2", "--batch-size", "3", "--hidden", "32", "--layers", "1",
                     "--heads", "2", "--window", "2"]) == 0
    pipe = TokenShufflePipeline.from_pretrained(out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert pipe(data.captions[0]).images[0].size == (32, 32)
    (tmp_path / "mine" / "a").mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "mine" / "a" / "x.png")
    (tmp_path / "mine" / "a" / "x.txt").write_text("a red star\n")
    assert zoo_main(["tokenize", str(tmp_path / "vq"), "--data", str(tmp_path / "mine"), "--size", "32",
                     "--out", str(tmp_path / "mine.safetensors")]) == 0
    assert TokenDataset(tmp_path / "mine.safetensors").captions == ["a red star"]


def test_token_shuffle_benchmark_on_tiny_pipelines(tmp_path, monkeypatch):
    """benchmarks/token_shuffle.py end to end on random 32 px pipelines (the numbers mean nothing)."""
    import json

    from benchmarks import common, token_shuffle
    from pipelines import TokenShufflePipeline
    from tokenizers_visual import VQModel
    from zoo.data.text import caption_tokenizer

    tokenizer = caption_tokenizer()
    torch.manual_seed(0)
    vq = VQModel(codebook_size=32, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1, 1],
                 decoder_ch_mult=[1, 1, 1], num_res_blocks=1, z_channels=32).eval()
    for window in (1, 2):
        model = tiny(window, text_vocab_size=len(tokenizer), max_text_tokens=16, grid_size=(8, 8))
        TokenShufflePipeline(transformer=model, tokenizer=tokenizer, vqvae=vq).save_pretrained(tmp_path / f"s{window}")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    assert token_shuffle.main(["--pipelines", f"s1={tmp_path / 's1'}", f"s2={tmp_path / 's2'}", "--images", "8",
                               "--batch-size", "4", "--latency-repeats", "1", "--cost-size", "64", "--quick"]) == 0
    result = json.loads((tmp_path / "token_shuffle.quick.json").read_text())
    references, measured, cost = result["rows"][:2], result["rows"][2:4], result["rows"][4:]
    assert [r["system"] for r in references] == ["real test images", "vq reconstructions"]
    assert references[0]["alignment"] > measured[0]["alignment"] and "shapes_fid" in references[1]
    assert [r["ar_steps"] for r in measured] == [64, 16] and measured[0]["resolution"] == "32x32"
    assert all(0 <= r["alignment"] <= r["shape_accuracy"] <= 1 and r["latency_s"] > 0 for r in measured)
    assert [(r["window"], r["ar_steps"], r["resolution"]) for r in cost] == [(1, 256, "64x64"), (2, 64, "64x64"),
                                                                             (4, 16, "64x64")]
    assert all(r["train_step_s"] > 0 and "shapes_fid" not in r for r in cost)
    assert len(result["claims"]) == 4 and result["claims"][0]["holds"]


def test_builtin_token_shuffle_shapes_generates_offline(offline, tmp_path):
    import zoo
    from PIL import Image

    from pipelines import TokenShufflePipeline
    from weights_registry import get_entry
    from zoo.cli import main

    entry = get_entry("token-shuffle-shapes")
    assert entry.kind == "builtin" and (entry.path / "README.md").is_file()
    pipe = zoo.load("token-shuffle-shapes")
    assert type(pipe) is TokenShufflePipeline and pipe.transformer.dtype == torch.float32
    assert pipe.transformer.window == 2 and pipe.default_size == (128, 128) and pipe.transformer.num_windows == 256
    assert main(["generate", "token-shuffle-shapes", "--prompt", "a large red star in the center on a blue plain "
                 "background", "--num", "1", "--seed", "0", "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size == (128, 128)


def test_alignment_claim_needs_a_model_that_follows_prompts():
    from benchmarks.token_shuffle import alignment_claim

    assert alignment_claim({"alignment": 0.5}, {"alignment": 0.47})["holds"]
    assert not alignment_claim({"alignment": 0.5}, {"alignment": 0.4})["holds"]
    vacuous = alignment_claim({"alignment": 0.003}, {"alignment": 0.0})
    assert not vacuous["holds"] and "not measurable" in vacuous["evidence"]
