"""SpeechCodec: parity with transformers' Mimi, streaming == offline, quantizers, input checks."""

import pytest
import torch

from tokenizers_audio.codec import SpeechCodec
from weights_registry.converters.mimi import convert_mimi, hf_mimi_to_zoo
from zoo.nn.quantizers import EMACodebook, ResidualVQ, SplitResidualVQ

TINY = dict(num_filters=8, hidden_size=32, num_transformer_layers=2, num_heads=4, ffn_dim=64, context=5,
            num_codebooks=4, codebook_size=16, codebook_dim=8)


def tiny_hf_mimi():
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    config = MimiConfig(hidden_size=32, num_filters=8, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                        head_dim=8, intermediate_size=64, codebook_size=16, codebook_dim=8,
                        vector_quantization_hidden_dimension=8, num_quantizers=4, upsample_groups=32, sliding_window=5)
    model = MimiModel(config).eval()
    with torch.no_grad():  # Mimi starts with empty codebooks and near-identity layer scales: make every part count
        for name, buffer in model.named_buffers():
            if name.endswith("embed_sum"):
                buffer.copy_(torch.randn_like(buffer))
            elif name.endswith("cluster_usage"):
                buffer.copy_(torch.rand_like(buffer) + 0.5)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_and_zoo():
    hf = tiny_hf_mimi()
    return hf, hf_mimi_to_zoo(hf)


def speechlike(batch=2, frames=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames * 1920) / 24_000
    tone = torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t)
    return 0.3 * tone + 0.05 * torch.randn(batch, 1, len(t), generator=g)


def test_parity_with_transformers_mimi(hf_and_zoo):
    hf, codec = hf_and_zoo
    wav = speechlike()
    with torch.no_grad():
        hf_codes = hf.encode(wav, num_quantizers=4).audio_codes
        hf_audio = hf.decode(hf_codes).audio_values
        odd = wav[:1, :, :5003]  # a partial last frame: the per-layer end padding must match too
        hf_odd = hf.encode(odd, num_quantizers=3).audio_codes
    codes = codec.encode(wav, sample_rate=24_000, num_codebooks=4)
    assert torch.equal(codes, hf_codes)
    audio = codec.decode(codes)
    assert audio.shape == hf_audio.shape == (2, 1, 12 * 1920)
    assert (audio - hf_audio).abs().max() < 1e-4 * hf_audio.abs().max()
    assert torch.equal(codec.encode(odd, sample_rate=24_000, num_codebooks=3), hf_odd)


def moshi_layout(codec: SpeechCodec) -> dict:
    """zoo's weights under moshi's names (written out by hand, independently of the converter's rules)."""
    out = {}
    for name, tensor in codec.state_dict().items():
        for zoo_name, moshi_name in [
            ("encoder_transformer.layers.", "encoder_transformer.transformer.layers."),
            ("decoder_transformer.layers.", "decoder_transformer.transformer.layers."),
            (".attn.qkv.", ".self_attn.in_projs.0."), (".attn.proj.", ".self_attn.out_projs.0."),
            (".fc1.", ".linear1."), (".fc2.", ".linear2."), (".scale1.", ".layer_scale_1."), (".scale2.", ".layer_scale_2."),
            ("quantizer.semantic.", "quantizer.rvq_first."), ("quantizer.acoustic.", "quantizer.rvq_rest."),
            ("downsample.conv.", "downsample.conv.conv.conv."), ("upsample.convtr.", "upsample.convtr.convtr.convtr."),
        ]:
            name = name.replace(zoo_name, moshi_name)
        if name.startswith(("encoder.layers.", "decoder.layers.")):
            name = name.replace(".layers.", ".model.", 1)
            name = name.replace(".convtr.", ".convtr.convtr.") if ".convtr." in name else name.replace(".conv.", ".conv.conv.")
        if ".codebooks." in name:
            index, buffer = name.split(".codebooks.")[1].split(".")
            buffer = {"initialized": "_initialized"}.get(buffer, buffer)
            name = name.split(".codebooks.")[0] + f".vq.layers.{index}._codebook.{buffer}"
        out[name] = tensor
    return out


def test_moshi_layout_converts_to_the_same_codec(hf_and_zoo):
    _, codec = hf_and_zoo
    moshi_state = moshi_layout(codec)
    assert "encoder.model.0.conv.conv.weight" in moshi_state
    assert "encoder_transformer.transformer.layers.0.self_attn.in_projs.0.weight" in moshi_state
    assert "quantizer.rvq_rest.vq.layers.2._codebook.embedding_sum" in moshi_state
    assert "decoder.model.2.convtr.convtr.weight" in moshi_state
    converted = convert_mimi(moshi_state, codec_config=TINY)
    for name, tensor in codec.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name


def test_converter_rejects_mismatched_checkpoints(hf_and_zoo):
    hf, _ = hf_and_zoo
    state = dict(hf.state_dict())
    state.pop("quantizer.acoustic_residual_vector_quantizer.layers.2.codebook.embed_sum")
    with pytest.raises(ValueError, match="missing keys"):
        convert_mimi(state, hf.config)
    with pytest.raises(ValueError, match="not supported"):
        convert_mimi(hf.state_dict(), {**hf.config.to_dict(), "use_conv_shortcut": True})


def test_streaming_equals_offline(hf_and_zoo):
    _, codec = hf_and_zoo
    wav = speechlike(frames=10)
    codes = codec.encode(wav, sample_rate=24_000)
    streamed, state = [], None
    for chunk in wav.split(700, dim=-1):  # chunks that do not line up with frames
        frame_codes, state = codec.encode_step(chunk, state)
        streamed.append(frame_codes)
    assert torch.equal(torch.cat(streamed, dim=-1), codes)

    audio = codec.decode(codes)
    pieces, state = [], None
    for f in range(codes.shape[-1]):
        piece, state = codec.decode_step(codes[..., f: f + 1], state)
        assert piece.shape[-1] == codec.frame_size
        pieces.append(piece)
    assert (torch.cat(pieces, dim=-1) - audio).abs().max() < 1e-4 * audio.abs().max()


def test_codes_shape_range_and_bitrate():
    codec = SpeechCodec(**TINY).eval()
    codes = codec.encode(speechlike(batch=3, frames=5)[..., :-7], sample_rate=24_000, num_codebooks=2)
    assert codes.shape == (3, 2, 5) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 16
    assert codec.decode(codes).shape == (3, 1, 5 * 1920)
    assert codec.decode(codes, length=5000).shape[-1] == 5000
    assert codec.bitrate(2) == 2 * 4 * 12.5
    assert SpeechCodec().bitrate(8) == pytest.approx(1100.0)  # Mimi: 1.1 kbps at 8 codebooks


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(1, 2, 1920), "channels"),  # stereo
    (torch.zeros(2, 1920), "mono"),
    (torch.zeros(1, 1, 0), "empty"),
    (torch.full((1, 1, 1920), float("nan")), "NaN"),
])
def test_bad_audio_raises(bad, match):
    codec = SpeechCodec(**TINY).eval()
    with pytest.raises(ValueError, match=match):
        codec.encode(bad, sample_rate=24_000)


def test_sample_rate_and_codebook_checks():
    codec = SpeechCodec(**TINY).eval()
    wav = speechlike(batch=1, frames=2)
    with pytest.raises(ValueError, match="unknown"):
        codec.encode(wav)
    with pytest.raises(ValueError, match="16000 Hz"):
        codec.encode(wav, sample_rate=16_000)
    assert codec.encode(wav[..., :1280 * 2], sample_rate=16_000, resample=True).shape[-1] == 2
    with pytest.raises(ValueError, match="1..4"):
        codec.encode(wav, sample_rate=24_000, num_codebooks=5)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        codec.decode(torch.full((1, 2, 3), 16))
    with pytest.raises(ValueError, match="1..4 codebooks|codebooks; this codec"):
        codec.decode(torch.zeros(1, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        codec.decode(torch.zeros(1, 2, 3))


def test_ema_codebook_initialises_updates_and_replaces_dead_codes():
    torch.manual_seed(0)
    centres = torch.randn(4, 2) * 5
    data = centres[torch.randint(4, (512,))] + 0.01 * torch.randn(512, 2)
    codebook = EMACodebook(4, 2, decay=0.9).train()
    _, ids = codebook(data)
    assert codebook.initialized.item() == 1.0
    assert torch.cdist(codebook.embedding, centres).min(dim=0).values.max() < 0.1  # k-means found the clusters
    # a code nobody uses decays below the threshold and is moved onto the data
    with torch.no_grad():
        codebook.embedding_sum[0] = 1e3 * codebook.cluster_usage[0]
    for _ in range(40):
        codebook(data)
    assert torch.cdist(codebook.embedding[:1], data).min() < 1.0
    assert codebook.usage_stats()["live_codes"] == 1.0


def test_residual_vq_more_codebooks_less_error():
    torch.manual_seed(0)
    rvq = ResidualVQ(dim=8, num_quantizers=4, num_codes=32).train()
    x = torch.randn(4, 8, 64)
    for _ in range(3):
        _, codes, commitment = rvq(x)
    assert codes.shape == (4, 4, 64) and commitment.item() > 0
    rvq.eval()
    errors = [(rvq.decode(rvq.encode(x, n)) - x).pow(2).mean().item() for n in (1, 2, 4)]
    assert errors[0] > errors[1] > errors[2]
    y = x.clone().requires_grad_()
    rvq.train()(y)[0].sum().backward()  # one straight-through estimator: d(out)/d(x) = identity
    assert torch.allclose(y.grad, torch.ones_like(y))


def test_split_rvq_sums_semantic_and_acoustic():
    torch.manual_seed(0)
    split = SplitResidualVQ(dim=8, num_quantizers=3, num_codes=16, code_dim=4).train()
    x = torch.randn(2, 8, 32)
    split(x)
    split.eval()
    codes = split.encode(x)
    expected = split.semantic.decode(codes[:, :1]) + split.acoustic.decode(codes[:, 1:])
    assert torch.allclose(split.decode(codes), expected)
    assert torch.equal(split.encode(x, 1), codes[:, :1])


def test_no_quantization_rate_passes_latents_through_in_training():
    """Mimi's quantization rate (moshi's `no_quantization_rate`): a skipped sequence's output is its projected
    latent, the codebooks still learn from it, and evaluation always quantises."""
    torch.manual_seed(0)
    split = SplitResidualVQ(dim=8, num_quantizers=3, num_codes=16, code_dim=4).train()
    x = torch.randn(2, 8, 32)
    split(x)  # k-means initialisation
    before = split.acoustic.codebooks[0].embedding_sum.clone()
    skipped, codes, commitment, _ = split(x, no_quantization_rate=1.0)
    through = [rvq._project_out(rvq._project_in(x), 2) for rvq in (split.semantic, split.acoustic)]
    assert torch.allclose(skipped, through[0] + through[1], atol=1e-6)
    assert codes.shape == (2, 3, 32) and commitment.item() > 0
    assert not torch.equal(split.acoustic.codebooks[0].embedding_sum, before)  # the EMA still moved
    quantized = split(x)[0]
    assert not torch.allclose(quantized, skipped)
    torch.testing.assert_close(split.eval()(x, no_quantization_rate=1.0)[0], split.decode(split.encode(x)))
    with pytest.raises(ValueError, match=r"no_quantization_rate must be a number in \[0, 1\]"):
        split(x, no_quantization_rate=1.5)
    codec = SpeechCodec(**TINY).train()
    with pytest.raises(ValueError, match="pass no_quantization_rate=0"):
        codec(torch.zeros(1, 1, codec.frame_size), decoder_only=True, no_quantization_rate=0.5)


def tiny_semantic_codec():
    teacher = {"kind": "zoo-recognizer", "config": dict(hidden_size=32, num_layers=2, num_heads=2, ffn_dim=64)}
    torch.manual_seed(0)
    codec = SpeechCodec(**TINY, semantic_teacher=teacher).eval()
    with torch.no_grad():
        for name, buffer in codec.named_buffers():
            if name.endswith("embedding_sum"):
                buffer.copy_(torch.randn_like(buffer))
    return codec


def test_semantic_codec_fuses_the_teacher_and_streams(tmp_path):
    codec = tiny_semantic_codec()
    assert codec.teacher_ratio == 4 and not any(p.requires_grad for p in codec.teacher.parameters())
    wav = speechlike(frames=6)
    out = codec.train()(wav, num_codebooks=3)
    assert out.semantic_prediction.shape == out.semantic_target.shape == (2, 6, 32)
    codec.eval()
    assert not codec.teacher.training
    codes = codec.encode(wav, sample_rate=24_000)
    streamed, state = [], None
    for chunk in wav.split(777, dim=-1):
        frame_codes, state = codec.encode_step(chunk, state)
        streamed.append(frame_codes)
    assert torch.equal(torch.cat(streamed, dim=-1), codes)
    codec.save_pretrained(tmp_path / "codec")
    again = SpeechCodec.from_pretrained(tmp_path / "codec")
    assert torch.equal(again.encode(wav, sample_rate=24_000), codes)  # the teacher is saved with the codec


def test_a_transformers_speech_encoder_can_be_the_teacher():
    hubert = {"kind": "transformers", "model_type": "hubert",
              "config": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             conv_dim=[8, 8], conv_stride=[5, 64], conv_kernel=[10, 128], num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=2)}
    codec = SpeechCodec(**TINY, semantic_teacher=hubert).eval()
    assert codec.teacher.samples_per_frame == 480 and codec.teacher_ratio == 4  # 320 samples at 16 kHz
    codes = codec.encode(speechlike(batch=1, frames=3), sample_rate=24_000)
    assert codes.shape == (1, 4, 3)
    with pytest.raises(NotImplementedError, match="does not stream"):
        codec.encode_step(speechlike(batch=1, frames=1))


def test_zoo_convert_mimi_from_a_transformers_folder(hf_and_zoo, tmp_path):
    from zoo.cli import main

    hf, codec = hf_and_zoo
    hf.save_pretrained(tmp_path / "mimi")
    assert main(["convert", "mimi", "--checkpoint", str(tmp_path / "mimi"), "--out", str(tmp_path / "zoo")]) == 0
    converted = SpeechCodec.from_pretrained(tmp_path / "zoo")
    wav = speechlike(batch=1, frames=3)
    assert torch.equal(converted.encode(wav, sample_rate=24_000), codec.encode(wav, sample_rate=24_000))
    torch.save({"weights": 1}, tmp_path / "mimi.pt")
    with pytest.raises(ValueError, match="safetensors"):
        from weights_registry.converters import convert_mimi_checkpoint

        convert_mimi_checkpoint(tmp_path / "mimi.pt")


def test_builtin_codec_reconstructs_speech_offline(offline, tmp_path):
    """`zoo tokenize` and `zoo reconstruct` with the built-in codec, offline."""
    import numpy as np

    import zoo
    from weights_registry import get_entry
    from zoo.audio import read_wav, write_wav
    from zoo.cli import main
    from zoo.data import speech
    from zoo.metrics import audio as metrics

    if not speech.espeak_available():
        pytest.skip("espeak-ng is not installed")
    entry = get_entry("codec-speech")
    assert entry.kind == "builtin" and (entry.path / "README.md").is_file()
    utterance = speech.SpeechDataset("validation", 2, cache_dir=tmp_path, progress=False)[1]
    write_wav(tmp_path / "in.wav", utterance["audio"], 24_000)
    assert main(["tokenize", "codec-speech", str(tmp_path / "in.wav")]) == 0
    codes = np.load(tmp_path / "in.codes.npy")
    assert codes.shape == (8, -(-len(utterance["audio"]) // 960)) and codes.max() < 1024
    assert main(["reconstruct", "codec-speech", str(tmp_path / "in.wav"), "--out", str(tmp_path / "out.wav")]) == 0
    audio, _ = read_wav(tmp_path / "out.wav")
    # version 2 (see the model card): intelligible to STOI, partly to the recogniser (35.8% WER)
    assert metrics.stoi(utterance["audio"], audio, 24_000) > 0.75
    assert metrics.mel_distance(utterance["audio"], audio, 24_000) < 1.4
    assert zoo.load("asr-speech").transcribe(audio, sample_rate=24_000)[0]
