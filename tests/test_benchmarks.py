import json

import pytest

from benchmarks import common


def test_results_file_and_benchmarks_section(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# benchmarks\n\n<!-- --8<-- [start:demo] -->\nold\n<!-- --8<-- [end:demo] -->\n\ntail\n")
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


def test_image_tokenizer_benchmark_on_a_tiny_vq(tmp_path, monkeypatch):
    """The tokenizer benchmark end to end on a random 32 px VQ (the numbers mean nothing)."""
    import torch

    from benchmarks import image_tokenizer
    from tokenizers_visual import VQModel

    torch.manual_seed(0)
    VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1, 1],
            decoder_ch_mult=[1, 1, 1], num_res_blocks=1, z_channels=32).save_pretrained(tmp_path / "vq")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    args = ["--vq", str(tmp_path / "vq"), "--images", "20", "--size", "32", "--delta", "4", "--quick"]
    assert image_tokenizer.main(args) == 0
    result = json.loads((tmp_path / "image_tokenizer.quick.json").read_text())
    real, recon, *by_size = result["rows"]
    assert real["class_accuracy"] >= 0.8  # the classifier knows real images, even at 32 px
    assert {row["system"].split(":")[0] for row in by_size} == {"real", f"{tmp_path / 'vq'} reconstructions"}
    assert all(0 <= row["class_accuracy"] <= 1 and row["system"].endswith("images)") for row in by_size)
    assert 0 <= recon["class_accuracy"] <= 1 and recon["tokens_per_image"] == 64 and 0 < recon["codebook_usage"] <= 1
    assert [c["holds"] for c in result["claims"]] == [False, recon["codebook_usage"] >= 0.5]  # random VQ: PSNR low


def test_train_step_benchmark_on_a_tiny_model(tmp_path, monkeypatch):
    """float32 against bf16 autocast through zoo's training loop, on a random VQ's tokens (speeds mean nothing)."""
    import torch

    from benchmarks import train_step
    from tokenizers_visual import VQModel

    torch.manual_seed(0)
    VQModel(codebook_size=64, codebook_dim=4, encoder_ch=16, decoder_ch=16, encoder_ch_mult=[1, 1, 1, 1], norm_groups=8,
            decoder_ch_mult=[1, 1, 1, 1], num_res_blocks=1, z_channels=16).save_pretrained(tmp_path / "vq")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    args = ["--vq", str(tmp_path / "vq"), "--batch-size", "4", "--hidden", "32", "--layers", "1", "--heads", "2",
            "--quick"]
    assert train_step.main(args) == 0
    result = json.loads((tmp_path / "train_step.quick.json").read_text())
    fp32, bf16 = result["rows"]
    assert (fp32["mixed_precision"], bf16["mixed_precision"]) == ("no", "bf16") and fp32["speedup"] == 1.0
    assert all(r["steps_per_s"] > 0 and r["final_loss"] > 0 for r in result["rows"])
    assert len(result["claims"]) == 2
    with pytest.raises(SystemExit, match="--sequences"):
        train_step.main(["--vq", str(tmp_path / "vq"), "--sequences", "2", "--batch-size", "4"])


def test_speech_batches_quick_run(tmp_path, monkeypatch):
    """Random against length-grouped batches of the tts-speech recipe, on a tiny LM: both rows train one
    epoch of the same utterances, and grouping leaves less padding."""
    from benchmarks import speech_batches
    from zoo.data.speech import espeak_available

    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    assert speech_batches.main(["--cache-dir", str(tmp_path / "cache"), "--quick"]) == 0
    result = json.loads((tmp_path / "speech_batches.quick.json").read_text())
    shuffled, grouped = result["rows"]
    assert shuffled["steps"] == grouped["steps"] == 12 and shuffled["speedup"] == 1.0
    assert grouped["padded_share"] < shuffled["padded_share"] and all(r["seconds"] > 0 for r in result["rows"])
    assert len(result["claims"]) == 1
    with pytest.raises(SystemExit, match="--utterances"):
        speech_batches.main(["--utterances", "8"])


def test_c2i_benchmark_on_a_tiny_pipeline(tmp_path, monkeypatch):
    """The c2i benchmark end to end on a random 32 px pipeline (the numbers mean nothing)."""
    import torch

    from benchmarks import c2i
    from pipelines import ARImagePipeline
    from tests.conftest import tiny_transformer
    from tokenizers_visual import VQModel

    torch.manual_seed(0)
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1, 1],
                 decoder_ch_mult=[1, 1, 1], num_res_blocks=1, z_channels=32).eval()
    ARImagePipeline(transformer=tiny_transformer(grid_size=(8, 8)), vqvae=vq).save_pretrained(tmp_path / "pipe")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    assert c2i.main(["--pipeline", str(tmp_path / "pipe"), "--images", "20", "--cfg", "1.0", "3.0", "--top-k", "0", "5",
                     "--quick"]) == 0
    result = json.loads((tmp_path / "c2i.quick.json").read_text())
    systems = [row["system"] for row in result["rows"]]
    assert systems[:2] == ["real images (validation split)", "tokenizer reconstructions"] and len(systems) == 6
    assert [(row["cfg"], row["top_k"]) for row in result["rows"][2:]] == [(1.0, 0), (3.0, 0), (1.0, 5), (3.0, 5)]
    for row in result["rows"]:
        assert 0 <= row["class_accuracy"] <= 1 and row["shapes_fid"] >= 0 and 0 <= row["precision"] <= 1
    assert result["rows"][0]["class_accuracy"] >= 0.9  # the classifier knows real images
    assert len(result["claims"]) == 2


def test_take_turns_runs_every_task_round_by_round():
    from benchmarks.images import take_turns

    calls = []
    results, seconds = take_turns({"a": lambda i: calls.append(("a", i)) or i, "b": lambda i: calls.append(("b", i))}, 3)
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert results["a"] == [0, 1, 2] and len(seconds["b"]) == 3 and min(seconds["a"]) >= 0
    with pytest.raises(ValueError, match="at least one task"):
        take_turns({}, 3)


def test_codec_benchmark_on_tiny_models(tmp_path, monkeypatch):
    """The codec benchmark end to end on random tiny models (the numbers mean nothing)."""
    import pytest
    import torch

    from benchmarks import codec as codec_benchmark
    from tokenizers_audio import SpeechCodec
    from zoo.data.speech import espeak_available
    from zoo.metrics.recognizer import SpeechRecognizer

    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    torch.manual_seed(0)
    SpeechCodec(num_filters=4, ratios=[8, 6, 5, 2], hidden_size=16, num_transformer_layers=1, num_heads=2, ffn_dim=32,
                frame_rate=25.0, num_codebooks=4, codebook_size=16, codebook_dim=4).save_pretrained(tmp_path / "codec")
    SpeechRecognizer(hidden_size=16, num_layers=1, num_heads=2, ffn_dim=32).save_pretrained(tmp_path / "asr")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    args = ["--codec", str(tmp_path / "codec"), "--ablation", str(tmp_path / "codec"), "--recognizer", str(tmp_path / "asr"),
            "--utterances", "2", "--levels", "1", "4", "--no-peers", "--cache-dir", str(tmp_path / "cache"), "--quick"]
    assert codec_benchmark.main(args) == 0
    result = json.loads((tmp_path / "codec.quick.json").read_text())
    quality = [r for r in result["rows"] if "codebooks" in r]
    assert [r["codebooks"] for r in quality] == [1, 4, 1, 4] and quality[1]["bitrate_bps"] == 4 * 4 * 25.0
    assert all(0 <= r["stoi"] <= 1 and r["wer"] >= 0 for r in quality)
    assert len(result["claims"]) == 4 and result["rows"][-1]["encode_rtf"] > 0


def test_recognizer_benchmark_on_a_tiny_model(tmp_path, monkeypatch):
    """The judge's benchmark end to end on a random tiny recogniser: every channel, one claim per judge."""
    import pytest
    import torch

    from benchmarks import recognizer as recognizer_benchmark
    from zoo.data.speech import espeak_available
    from zoo.metrics.recognizer import SpeechRecognizer

    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    torch.manual_seed(0)
    SpeechRecognizer(hidden_size=16, num_layers=1, num_heads=2, ffn_dim=32).save_pretrained(tmp_path / "asr")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    args = ["--recognizers", str(tmp_path / "asr"), "--utterances", "2", "--cache-dir", str(tmp_path / "cache"),
            "--quick"]
    assert recognizer_benchmark.main(args) == 0
    result = json.loads((tmp_path / "recognizer.quick.json").read_text())
    assert [r["condition"] for r in result["rows"]] == list(recognizer_benchmark.conditions())
    assert all(r["wer"] >= 0 for r in result["rows"]) and len(result["claims"]) == 1


def test_tts_benchmark_on_tiny_models(tmp_path, monkeypatch):
    """The TTS benchmark end to end on random tiny models (the numbers mean nothing)."""
    import pytest
    import torch

    from benchmarks import tts as tts_benchmark
    from pipelines import CodecTTSPipeline
    from tests.conftest import trace_compiled_path
    from tokenizers_audio import SpeechCodec
    from zoo.ar.speech import SpeechLM
    from zoo.data.speech import espeak_available
    from zoo.data.text import character_tokenizer
    from zoo.metrics.recognizer import SpeechRecognizer

    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    torch.manual_seed(0)
    codec = SpeechCodec(num_filters=4, ratios=[8, 6, 5, 2], hidden_size=16, num_transformer_layers=1, num_heads=2,
                        ffn_dim=32, frame_rate=25.0, num_codebooks=4, codebook_size=16, codebook_dim=4)
    lm = SpeechLM(text_vocab_size=31, max_text_tokens=240, num_codebooks=2, codebook_size=16, max_frames=12,
                  hidden_size=16, num_layers=1, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2,
                  num_mctp_modules=2)
    CodecTTSPipeline(lm=lm, tokenizer=character_tokenizer(), codec=codec).save_pretrained(tmp_path / "tts")
    SpeechRecognizer(hidden_size=16, num_layers=1, num_heads=2, ffn_dim=32).save_pretrained(tmp_path / "asr")
    # the DSM-TTS variant: a text stream needs the characters' ids inside the codebook's id range
    wide_codec = SpeechCodec(**{**codec.config, "codebook_size": 32})
    dsm = SpeechLM(**{**lm.config, "codebook_size": 32, "max_frames": 48, "text_stream": True, "text_lead": 2})
    CodecTTSPipeline(lm=dsm, tokenizer=character_tokenizer(), codec=wide_codec).save_pretrained(tmp_path / "dsm")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    trace_compiled_path(monkeypatch)  # --compile's rows
    args = ["--tts", str(tmp_path / "tts"), "--ablation", str(tmp_path / "tts"),
            "--phonemes", str(tmp_path / "tts"), "--text-stream", str(tmp_path / "dsm"),
            "--recognizer", str(tmp_path / "asr"), "--schedules", "1,2", "--sampling", "1,0",
            "--cache-dir", str(tmp_path / "cache"), "--compile",
            "--quick", "--name", "tts-all"]
    assert tts_benchmark.main(args) == 0
    result = json.loads((tmp_path / "tts-all.quick.json").read_text())
    assert [r["system"].split(" (")[-1] for r in result["rows"]] == [
        "espeak-ng originals", "2 codebooks)", "2 codebooks)", "plain decoding)", "acoustic-only codec)",
        "phoneme input)", "aligned text stream)", "temperature 1, top-k off)", "MCTP 1,2)",
        "plain decoding, torch.compile)", "MCTP 1,2, torch.compile)"]
    # one codec row per distinct codec: the three variants on the baseline's codec share its row
    assert [r["system"].split("'s codec")[0] for r in result["rows"][1:3]] == [str(tmp_path / n) for n in ("tts", "dsm")]
    assert all(r["wer"] >= 0 for r in result["rows"] if "wer" in r) and result["rows"][3]["rtf"] > 0
    assert all(r["rtf"] > 0 and r["first_audio_s"] > 0 for r in result["rows"][-2:])
    assert len(result["claims"]) == 10 and result["claims"][-1]["claim"].startswith("compiled decode steps")


def test_flextok_benchmark_on_tiny_tokenizers(tmp_path, monkeypatch):
    """The FlexTok / KARL benchmark end to end on random 32 px models (the numbers mean nothing)."""
    import torch

    from benchmarks import flextok
    from pipelines import FlexTokPipeline
    from tests.test_flextok import TINY, TINY_VAE
    from tokenizers_visual import FlexTok, KARLTokenizer
    from zoo.ar import ARTransformer

    torch.manual_seed(0)
    tokenizer = FlexTok(**{**TINY, "fsq_levels": [4, 4]})
    tokenizer.save_pretrained(tmp_path / "flextok")
    KARLTokenizer(vae_config=TINY_VAE, image_size=32, max_tokens=8, token_counts=[4, 8], codebook_size=16, dim=64,
                  encoder_depth=1, decoder_depth=1, head_dim=32).save_pretrained(tmp_path / "karl")
    ar = ARTransformer(vocab_size=16, hidden_size=32, num_layers=1, num_heads=2, num_classes=10, seq_len=8,
                       position_embedding="rope_1d")
    FlexTokPipeline(tokenizer=tokenizer, transformer=ar).save_pretrained(tmp_path / "ar")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    args = ["--flextok", str(tmp_path / "flextok"), "--karl", str(tmp_path / "karl"), "--ar", str(tmp_path / "ar"),
            "--images", "6", "--gen-images", "4", "--gen-tokens", "2", "8", "--size", "32", "--steps", "2", "--quick"]
    assert flextok.main(args) == 0
    result = json.loads((tmp_path / "flextok.quick.json").read_text())
    systems = [r["system"] for r in result["rows"]]
    assert [r["tokens"] for r in result["rows"] if r["system"].startswith("flextok k=")] == [1, 2, 4, 8, 16]
    assert systems[0] == "VAE reconstructions (the ceiling)" and "psnr_db" in result["rows"][0]
    assert "flextok-ar k=2" in systems and "flextok-ar k=8" in systems
    probe = [r for r in result["rows"] if r["system"].startswith("decoder t=")]
    assert [(r["t"], r["tokens"]) for r in probe] == [(t, k) for t in (0.5, 0.8, 1.0) for k in (0, 1, 2, 4, 8, 16)]
    assert probe[0]["system"] == "decoder t=0.5 null condition" and all(r["velocity_mse"] > 0 for r in probe)
    assert any(s.startswith("karl max_error=0.02") for s in systems)
    error_rows = [r for r in result["rows"] if "mean_error" in r]
    assert {(r["system"], r["tokens"]) for r in error_rows} == {("vae alone", 0), ("karl first 4 tokens", 4),
                                                                ("karl all tokens", 8)}  # budget 16 > max_tokens
    assert all(0 <= r["mean_error"] <= 1 for r in error_rows)
    by_size = [r for r in result["rows"] if r["system"].startswith("karl max_error=0.04: ") and "PNG" not in r["system"]]
    assert by_size[0]["system"].endswith("tokens against shape size") and -1 <= by_size[0]["spearman_rho"] <= 1
    assert sum(r["images"] for r in by_size[1:]) == 6 and all(r["system"].endswith(" shapes") for r in by_size[1:])
    png = [r for r in result["rows"] if "PNG bytes" in r["system"]]
    assert len(png) == 3 and all(r["png_bytes"] > 0 and -1 <= r["spearman_rho"] <= 1 for r in png)
    assert len(result["claims"]) == 6 and all(isinstance(c["holds"], bool) for c in result["claims"])


def test_png_bytes_grow_with_detail():
    import torch

    from benchmarks.flextok import png_bytes

    flat, noise = torch.zeros(1, 3, 32, 32), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    small, large = png_bytes(torch.cat([flat, noise]))
    assert 0 < small < large


def test_vat_benchmark_on_tiny_models(tmp_path, monkeypatch):
    """The VAT benchmark end to end on random tiny models (the numbers mean nothing)."""
    import torch

    from benchmarks import vat as vat_benchmark
    from pipelines import VAT3DPipeline
    from tests.test_vat import TINY, _next_scale_model
    from tokenizers_visual import VAT
    from zoo.data.primitives import CATEGORIES

    torch.manual_seed(0)
    vat = VAT(**TINY)
    vat.save_pretrained(tmp_path / "vat")
    VAT3DPipeline(transformer=_next_scale_model(vat.quantizer), vat=vat, class_names=CATEGORIES).save_pretrained(
        tmp_path / "ar")
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    args = ["--vat", str(tmp_path / "vat"), "--ar", str(tmp_path / "ar"), "--shapes", "2", "--resolution", "9",
            "--samples", "500", "--quick"]
    assert vat_benchmark.main(args) == 0
    result = json.loads((tmp_path / "vat.quick.json").read_text())
    systems = [r["system"] for r in result["rows"]]
    assert systems == ["vat 3 scales", "vat 4 scales", "vat-ar (all scales)"]
    assert result["rows"][1]["tokens"] == 15 and result["rows"][2]["shapes"] == 7
    assert len(result["claims"]) == 2


def test_figures_are_drawn_from_results(tmp_path):
    """Every committed results file with a figure draws, and FlexTok / VAT draw from rows of their shape."""
    import json

    from PIL import Image

    from benchmarks.figures import DRAW, RESULTS_DIR, draw

    results = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("*.json")) if ".quick" not in p.name]
    common = {"command": "python benchmarks/x.py", "date": "2026-12-01", "machine": "test"}
    results += [
        {"benchmark": "flextok", **common, "rows": [
            {"system": f"flextok k={k}", "tokens": k, "psnr_db": 20 + k, "shapes_rfid": 100 / k} for k in (1, 4, 16)]
            + [{"system": "VAE reconstructions (the ceiling)", "psnr_db": 40.0, "shapes_rfid": 5.0}]
            + [{"system": "flextok-ar k=8", "tokens": 8, "shapes_fid": 50.0, "images_per_s": 3.0}]},
        {"benchmark": "vat", **common, "rows": [
            {"system": f"vat {s} scales", "tokens": t, "compression": c, "fscore@0.02": f, "fscore@0.01": f / 2}
            for s, t, c, f in ((3, 7, 900.0, 0.8), (7, 127, 60.0, 0.95))]},
    ]
    drawn = {r["benchmark"] for r in results if draw(r, figures_dir=tmp_path) is not None}
    assert {"flextok", "vat"} <= drawn and drawn <= set(DRAW)
    for name in drawn:
        assert Image.open(tmp_path / f"{name}.png").size[0] > 300
    assert draw({"benchmark": "image_tokenizer", **common, "rows": []}, figures_dir=tmp_path) is None
