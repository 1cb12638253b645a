"""CodecTTSPipeline and SpeechContinuationPipeline on tiny random models: lengths, streaming == offline,
MCTP schedules, saving and loading, input errors."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from pipelines import CodecTTSPipeline, SpeechContinuationPipeline
from tests.conftest import trace_compiled_path
from tokenizers_audio import SpeechCodec
from zoo.ar.speech import SpeechLM
from zoo.data.text import character_tokenizer

CODEC = dict(num_filters=8, hidden_size=32, num_transformer_layers=2, num_heads=4, ffn_dim=64, context=5,
             num_codebooks=4, codebook_size=16, codebook_dim=8)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    lm = SpeechLM(text_vocab_size=31, max_text_tokens=24, num_codebooks=3, codebook_size=16, max_frames=20,
                  hidden_size=32, num_layers=2, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2,
                  num_mctp_modules=2)
    with torch.no_grad():  # codebook 0 uniform over codes and END: rows end after ~17 frames, some within budget
        lm.depth.body.head.weight[:17].zero_()
    pipe = CodecTTSPipeline(lm=lm.eval(), tokenizer=character_tokenizer(), codec=SpeechCodec(**CODEC).eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeds(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def test_tts_lengths_follow_the_end_token(pipe):
    out = pipe(["the cat sat", "a dog", "hi there", "we ran"], generator=seeds(4))
    assert out.sample_rate == 24_000 and len(out.audios) == 4
    for audio, codes in zip(out.audios, out.codes):
        assert codes.shape[0] == 3 and audio.dtype == np.float32
        assert audio.shape == (codes.shape[1] * pipe.codec.frame_size,)
        assert codes.max() < 16
    assert min(c.shape[1] for c in out.codes) < 19  # at least one row said END before the budget


@pytest.mark.parametrize("schedule", [None, [1, 2]])
def test_streaming_gives_the_offline_waveform(pipe, schedule):
    offline = pipe("the cat sat", generator=torch.Generator().manual_seed(5), mctp_schedule=schedule).audios[0]
    chunks = list(pipe("the cat sat", generator=torch.Generator().manual_seed(5), mctp_schedule=schedule,
                       stream=True, chunk_frames=2))
    assert len(chunks) > 1
    np.testing.assert_allclose(np.concatenate(chunks), offline, atol=1e-5)


@pytest.mark.parametrize("schedule", [None, [1, 2]])
def test_compiled_steps_give_the_eager_codes(pipe, monkeypatch, schedule):
    """compile=True decodes over the whole static cache (fixed shapes) in the backbone and the depth transformer."""
    trace_compiled_path(monkeypatch, pipe.lm.backbone, pipe.lm.depth.body)
    texts, kwargs = ["the cat sat", "a dog ran home"], dict(guidance_scale=2.0, mctp_schedule=schedule)
    eager = pipe(texts, generator=seeds(2, 3), **kwargs).codes
    compiled = pipe(texts, generator=seeds(2, 3), compile=True, **kwargs).codes
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled))
    assert pipe.lm.depth.body._compiled_decode is not None  # the depth transformer took the compiled path


def test_max_seconds_and_guidance(pipe):
    out = pipe("the cat sat", max_seconds=0.2, guidance_scale=2.0, generator=torch.Generator().manual_seed(1))
    assert len(out.codes[0][0]) <= 5  # 0.2 s at 12.5 Hz is 3 frames (the budget rounds up)
    with pytest.raises(ValueError, match="max_seconds"):
        pipe("the cat sat", max_seconds=-1)


def test_continuation_returns_what_follows_the_prompt(pipe):
    cont = SpeechContinuationPipeline(**pipe.components)
    cont.set_progress_bar_config(disable=True)
    prompt = 0.1 * torch.randn(1, 1, 4 * pipe.codec.frame_size)
    out = cont(prompt, sample_rate=24_000, generator=torch.Generator().manual_seed(2))
    total = out.codes[0].shape[1]
    assert total >= 4 and out.audios[0].shape == ((total - 4) * pipe.codec.frame_size,)
    chunks = list(cont(prompt, sample_rate=24_000, generator=torch.Generator().manual_seed(2), stream=True))
    np.testing.assert_allclose(np.concatenate(chunks) if chunks else np.zeros(0), out.audios[0], atol=1e-5)


def test_compiled_continuation_gives_the_eager_codes(pipe, monkeypatch):
    trace_compiled_path(monkeypatch, pipe.lm.backbone, pipe.lm.depth.body)
    cont = SpeechContinuationPipeline(**pipe.components)
    cont.set_progress_bar_config(disable=True)
    prompt = 0.1 * torch.randn(1, 1, 4 * pipe.codec.frame_size, generator=torch.Generator().manual_seed(0))
    eager = cont(prompt, sample_rate=24_000, text="the cat", generator=torch.Generator().manual_seed(2)).codes[0]
    compiled = cont(prompt, sample_rate=24_000, text="the cat", generator=torch.Generator().manual_seed(2),
                    compile=True).codes[0]
    assert torch.equal(eager, compiled)


@pytest.mark.parametrize("text, match", [
    ("", "empty"), ("   ", "empty"), ("call me at 42", "cannot say"), ("naïve", "cannot say"),
    ("a very long sentence that goes on and on", "at most"), (3, "string"), ([], "non-empty"),
])
def test_bad_text_raises(pipe, text, match):
    with pytest.raises(ValueError, match=match):
        pipe(text)


def test_punctuation_is_dropped(pipe):
    a = pipe("The cat, sat!", generator=torch.Generator().manual_seed(0), max_seconds=0.3).codes[0]
    b = pipe("the cat sat", generator=torch.Generator().manual_seed(0), max_seconds=0.3).codes[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("audio, rate, match", [
    (torch.full((1, 1, 1920), float("nan")), 24_000, "NaN"),
    (torch.zeros(1, 1, 1920), 16_000, "16000"),
    (torch.zeros(1, 1, 1920), None, "unknown"),
])
def test_bad_audio_prompts_raise(pipe, audio, rate, match):
    cont = SpeechContinuationPipeline(**pipe.components)
    with pytest.raises(ValueError, match=match):
        cont(audio, sample_rate=rate)


def test_bad_call_arguments_raise(pipe):
    with pytest.raises(ValueError, match="output_type"):
        pipe("hi", output_type="pil")
    with pytest.raises(ValueError, match="one text at a time"):
        pipe(["hi", "yo"], stream=True)
    with pytest.raises(ValueError, match="MCTP modules"):
        pipe("hi", mctp_schedule="turbo")
    with pytest.raises(ValueError, match="compile must be True or False"):
        pipe("hi", compile="yes")


def test_save_and_load(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded, CodecTTSPipeline)
    loaded.set_progress_bar_config(disable=True)
    a = pipe("we ran", generator=torch.Generator().manual_seed(3)).audios[0]
    b = loaded("we ran", generator=torch.Generator().manual_seed(3)).audios[0]
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert isinstance(SpeechContinuationPipeline.from_pretrained(tmp_path), SpeechContinuationPipeline)


def test_builtin_tts_speaks_offline(offline, tmp_path):
    """`zoo generate tts-speech --text ... --out speech.wav` with the built-in model, offline."""
    from weights_registry import get_entry
    from zoo.audio import read_wav
    from zoo.cli import main

    entry = get_entry("tts-speech")
    assert entry.kind == "builtin" and (entry.path / "README.md").is_file()
    assert main(["generate", "tts-speech", "--text", "the cat sat on the old mat", "--seed", "0",
                 "--out", str(tmp_path / "speech.wav")]) == 0
    audio, rate = read_wav(tmp_path / "speech.wav")
    assert rate == 24_000 and 0.5 < audio.shape[-1] / rate < 6  # a short sentence, ended by the model


def test_builtin_prefix_tts_continues_speech(offline):
    """The built-in tts-speech reads an aligned text stream; tts-speech-prefix (its version 2) has none, so
    it is the one a SpeechContinuationPipeline takes."""
    import zoo

    assert zoo.load("tts-speech").lm.config.text_stream
    cont = SpeechContinuationPipeline.from_pretrained("tts-speech-prefix")
    assert not cont.lm.config.text_stream
    cont.set_progress_bar_config(disable=True)
    prompt = torch.sin(torch.arange(24_000) / 24_000 * 2 * torch.pi * 220)[None, None] * 0.1  # 1 s of a tone
    out = cont(prompt, sample_rate=24_000, max_seconds=0.4, generator=torch.Generator().manual_seed(0))
    assert out.sample_rate == 24_000 and 0 < out.audios[0].shape[-1] <= int(0.4 * 24_000) + 1920


@pytest.mark.skipif(not __import__("zoo.data.speech", fromlist=["x"]).espeak_available(), reason="needs espeak-ng")
def test_phoneme_input(pipe, tmp_path):
    """A model trained on phonemes reads espeak-ng's IPA of the text; the choice is saved with the pipeline."""
    from zoo.data.speech import PHONEMES, phonemize

    assert phonemize(["the cat", "", "john found the clock"]) == ["ðə kˈæt", "", "dʒˈɑːn fˈaʊnd ðə klˈɑːk"]
    tokenizer = character_tokenizer(PHONEMES)
    lm = SpeechLM(text_vocab_size=len(tokenizer), max_text_tokens=24, num_codebooks=3, codebook_size=16,
                  max_frames=20, hidden_size=32, num_layers=1, num_heads=2, depth_hidden_size=16, depth_layers=1,
                  depth_heads=2)
    phones = CodecTTSPipeline(lm=lm.eval(), tokenizer=tokenizer, codec=pipe.codec, text_input="phonemes")
    ids, mask = phones.encode_text(["the cat"])
    unk = tokenizer.convert_tokens_to_ids("[UNK]")
    assert mask.sum() == len("ðə kˈæt") + 1 and unk not in ids[0].tolist()  # every symbol known, then [SOA]
    phones.save_pretrained(tmp_path)
    assert DiffusionPipeline.from_pretrained(tmp_path).config.text_input == "phonemes"
    assert pipe.config.text_input == "characters"
    with pytest.raises(ValueError, match="text_input"):
        CodecTTSPipeline(lm=lm, tokenizer=tokenizer, codec=pipe.codec, text_input="ipa")


@pytest.fixture(scope="module")
def text_stream_pipe():
    """A DSM-TTS pipeline: the LM also walks through the text's characters in an aligned text stream."""
    torch.manual_seed(0)
    lm = SpeechLM(text_vocab_size=31, max_text_tokens=24, num_codebooks=3, codebook_size=32, max_frames=40,
                  hidden_size=32, num_layers=2, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2,
                  num_mctp_modules=2, text_stream=True, text_lead=2)
    codec = SpeechCodec(**{**CODEC, "codebook_size": 32})
    pipe = CodecTTSPipeline(lm=lm.eval(), tokenizer=character_tokenizer(), codec=codec.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("schedule", [None, [1, 2]])
def test_text_stream_tts_streams_the_offline_waveform(text_stream_pipe, schedule):
    pipe = text_stream_pipe
    out = pipe(["hi", "we sat"], generator=seeds(2, 7), mctp_schedule=schedule)
    for audio, codes in zip(out.audios, out.codes):  # the codec's codes only, the text stream left out
        assert codes.shape[0] == 3 and audio.shape == (codes.shape[1] * pipe.codec.frame_size,)
    chunks = list(pipe("we sat", generator=torch.Generator().manual_seed(8), mctp_schedule=schedule, stream=True))
    offline = pipe("we sat", generator=torch.Generator().manual_seed(8), mctp_schedule=schedule).audios[0]
    np.testing.assert_allclose(np.concatenate(chunks), offline, atol=1e-5)


def test_text_stream_tts_refuses_what_it_cannot_read(text_stream_pipe):
    with pytest.raises(ValueError, match="audio prompt"):
        SpeechContinuationPipeline(**text_stream_pipe.components)(torch.zeros(1, 1, 4800), sample_rate=24_000)
    with pytest.raises(ValueError, match="reads characters"):
        CodecTTSPipeline(**{**text_stream_pipe.components, "text_input": "phonemes"})
