"""The speech LM on the shared engine: delays, the depth transformer's multi-token step, MCTP."""

import pytest
import torch

from zoo.ar import generate
from zoo.ar.speech import (
    FrameStep,
    SpeechLM,
    add_text_stream,
    aligned_text_stream,
    delay_codes,
    mctp_plan,
    moshi_delays,
    text_stream_delays,
    undelay_codes,
)
from zoo.data.text import SOA, character_tokenizer, encode_prompts, token_ids

Q, V = 3, 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SpeechLM(text_vocab_size=31, max_text_tokens=8, num_codebooks=Q, codebook_size=V, max_frames=24,
                    hidden_size=32, num_layers=2, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2,
                    num_mctp_modules=3, text_dropout=0.0).eval()


def prompt(texts=("the cat", "a dog")):
    return encode_prompts(character_tokenizer(), list(texts), max_length=8, end_token=SOA)


def fed_frames(model, tokens, num_given_frames=0):
    """The frames the model read back: engine tokens [B, F * Q] with START / END forced as the step does."""
    frames = tokens.view(tokens.shape[0], -1, Q).transpose(1, 2).clone()  # [B, Q, F]
    for q, d in enumerate(model.delays):
        frames[:, q, :d] = model.start_id
    ended = torch.zeros(frames.shape[0], dtype=torch.bool)
    for f in range(num_given_frames, frames.shape[2]):
        frames[ended, 0, f] = model.end_id
        ended |= frames[:, 0, f] == model.end_id
    return frames


def test_delay_pattern_and_its_inverse():
    codes = torch.randint(0, V, (2, 4, 7))
    delays = moshi_delays(4)
    assert delays == [0, 1, 1, 1]
    frames = delay_codes(codes, delays, start_id=V + 1, end_id=V)
    assert frames.shape == (2, 4, 8)
    assert (frames[:, 1:, 0] == V + 1).all() and (frames[:, 0, -1] == V).all()
    assert torch.equal(frames[:, 1:, 1:], codes[:, 1:]) and torch.equal(frames[:, 0, :7], codes[:, 0])
    assert torch.equal(undelay_codes(frames, delays), codes)
    assert torch.equal(undelay_codes(delay_codes(codes, [0, 2, 1, 3], V + 1, V), [0, 2, 1, 3]), codes)
    with pytest.raises(ValueError, match="one delay per codebook"):
        delay_codes(codes, [0, 1], V + 1, V)


def test_mctp_schedule_gives_exactly_the_requested_frames():
    assert mctp_plan(None, 5, 0) == [1] * 5
    assert mctp_plan("turbo", 25, 10) == [11, 11, 3]
    assert mctp_plan([1, 4, 3, 8, 4, 10], 40, 10) == [5, 1, 1, 9, 1, 1, 1, 11, 5, 1, 1, 3]
    assert mctp_plan("vanilla", 3, 0) == [1, 1, 1]
    for frames in range(1, 30):
        assert sum(mctp_plan("balance", frames, 10)) == frames
    with pytest.raises(ValueError, match="MCTP modules"):
        mctp_plan("turbo", 5, 3)
    with pytest.raises(ValueError, match="pairs"):
        mctp_plan([1, 2, 3], 5, 3)
    with pytest.raises(ValueError, match="unknown MCTP schedule"):
        mctp_plan("fast", 5, 3)


def test_depth_step_emits_the_frame_codebooks_in_order(model):
    ids, mask = prompt()
    out = generate(model.backbone, 6 * Q, prefix_ids=ids, prefix_mask=mask, step=FrameStep(model),
                   generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 6 * Q)
    frames = out.tokens.view(2, 6, Q)
    not_due = torch.tensor(model.delays)[None, :] > torch.arange(6)[:, None]  # [frames, Q]: streams not yet due
    assert (frames[:, not_due] == model.start_id).all()  # emitted as START, not sampled
    assert frames[:, ~not_due].max() <= V  # codes or END
    with pytest.raises(ValueError, match="num_steps must be in 0..3"):
        model.depth.sample(torch.zeros(1, model.config.hidden_size), lambda k, logits: None, num_steps=Q + 1)
    with pytest.raises(ValueError, match="whole frames"):
        generate(model.backbone, 6 * Q + 1, prefix_ids=ids, prefix_mask=mask, step=FrameStep(model))


@pytest.mark.parametrize("schedule", [None, [1, 2], "turbo_small"])
def test_cached_decoding_equals_recomputation(model, schedule):
    schedule = [2, 3] if schedule == "turbo_small" else schedule
    ids, mask = prompt()
    kwargs = dict(prefix_ids=ids, prefix_mask=mask, uncond_prefix_ids=prompt(["", ""])[0],
                  uncond_prefix_mask=prompt(["", ""])[1], guidance_scale=2.0)
    a = generate(model.backbone, 10 * Q, step=FrameStep(model, schedule), generator=torch.Generator().manual_seed(3),
                 **kwargs)
    b = generate(model.backbone, 10 * Q, step=FrameStep(model, schedule), generator=torch.Generator().manual_seed(3),
                 use_cache=False, **kwargs)
    assert torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize("schedule", [None, [1, 3], [2, 2, 1, 1]])
def test_decoding_distributions_equal_teacher_forcing(model, schedule):
    """Every sampled token's distribution equals the training forward's (backbone or MCTP module k) on the
    frames the model read: MCTP decoding with its lazily filled caches is the training computation."""
    ids, mask = prompt()
    given = torch.randint(0, V, (2, 2 * Q))
    given.view(2, 2, Q)[:, 0, 1:] = model.start_id
    out = generate(model.backbone, 12 * Q, prefix_ids=ids, prefix_mask=mask, step=FrameStep(model, schedule),
                   prompt_tokens=given, return_probs=True, generator=torch.Generator().manual_seed(1))
    frames = fed_frames(model, out.tokens, num_given_frames=2)
    with torch.no_grad():
        training = model(ids, mask, frames)
    plan = mctp_plan(schedule, 10, 3)
    source = [k for n in plan for k in range(n)]  # 0: the backbone, k: MCTP module k
    for f, k in enumerate(source, start=2):
        logits = training.logits[:, f] if k == 0 else training.mctp_logits[k - 1][:, f - k]
        logits[:, 1:, model.end_id] = -1e9
        expected = logits.softmax(-1)
        got = out.probs.view(2, -1, Q, V + 1)[:, f]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=f"frame {f} (module {k})")


def test_cutting_the_common_left_padding_changes_nothing(model):
    ids, mask = prompt(["hi", "a dog"])
    frames = delay_codes(torch.randint(0, V, (2, Q, 6)), model.delays, model.start_id, model.end_id)
    with torch.no_grad():
        full = model(ids, mask, frames)
        first = int(mask.any(0).nonzero()[0])
        assert first > 0
        cut = model(ids[:, first:], mask[:, first:], frames)
    torch.testing.assert_close(cut.logits, full.logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cut.mctp_logits[0], full.mctp_logits[0], atol=1e-5, rtol=1e-4)


def test_bad_frames_raise(model):
    ids, mask = prompt()
    with pytest.raises(ValueError, match="must lie in"):
        model(ids, mask, torch.full((2, Q, 5), V + 2))
    with pytest.raises(ValueError, match="codebooks"):
        model(ids, mask, torch.zeros(2, Q + 1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="MCTP modules"):
        FrameStep(model, "turbo")


def test_training_step_reduces_the_loss(model):
    from zoo.ar.speech import speech_lm_loss

    torch.manual_seed(0)
    lm = SpeechLM(**model.config)
    ids, mask = prompt()
    codes = torch.randint(0, V, (2, Q, 10))
    frames = delay_codes(torch.cat([codes, torch.full((2, Q, 1), V)], dim=2), lm.delays, lm.start_id, lm.end_id)
    num_valid = torch.tensor([frames.shape[2]] * 2)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = lm(ids, mask, frames, mctp_detach=True, mctp_frames=6)
        assert [len(t) for t in out.mctp_targets] == [6, 6, 6]
        loss = speech_lm_loss(out.logits, frames, num_valid, lm.start_id)
        loss = loss + sum(speech_lm_loss(m, frames, num_valid, lm.start_id, targets=t)
                          for m, t in zip(out.mctp_logits, out.mctp_targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_text_reliance_probe():
    from zoo.train.tts_speech import make_collate, text_reliance

    torch.manual_seed(0)
    lm = SpeechLM(text_vocab_size=31, max_text_tokens=16, num_codebooks=2, codebook_size=8, max_frames=12,
                  hidden_size=32, num_layers=1, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2)
    items = [{"text": t, "codes": torch.randint(0, 8, (2, 5))} for t in ("the cat", "a dog ran", "we sat")]
    ce = text_reliance(lm.train(), make_collate(lm, character_tokenizer()), items)
    assert set(ce) == {"own", "other", "none"} and all(v > 0 for v in ce.values()) and lm.training
    # with a transcript map (the phoneme recipe) the probe's empty prompt stays empty
    reversed_text = {item["text"]: item["text"][::-1] for item in items}
    ce_mapped = text_reliance(lm, make_collate(lm, character_tokenizer(), reversed_text), items)
    assert ce_mapped["none"] == pytest.approx(ce["none"]) and ce_mapped["own"] != pytest.approx(ce["own"])
    # a text-stream LM: the other's characters at their own times (one a frame), cut to this utterance's length
    lm = SpeechLM(**{**lm.config, "codebook_size": 32, "max_frames": 16, "text_stream": True, "text_lead": 1})
    items = [{"text": t, "codes": torch.randint(0, 32, (2, n)), "char_starts": torch.arange(len(t)) * 0.04}
             for t, n in (("the cat", 8), ("a dog ran", 10), ("we sat", 6))]
    collate = make_collate(lm, character_tokenizer(), frame_rate=25.0)
    assert set(text_reliance(lm, collate, items, frame_rate=25.0)) == {"own", "other", "none"}
    with pytest.raises(ValueError, match="frame_rate"):
        text_reliance(lm, collate, items)


def test_a_transcript_longer_than_the_text_prefix_stops_before_training():
    from zoo.train.tts_speech import check_prompt_room

    lm = SpeechLM(text_vocab_size=31, max_text_tokens=8, num_codebooks=2, codebook_size=8, max_frames=12,
                  hidden_size=32, num_layers=1, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2)
    check_prompt_room(lm, character_tokenizer(), ["the cat", "a dog"])  # 7 letters + [SOA] fit in 8
    with pytest.raises(SystemExit, match="--max-text-tokens 16"):
        check_prompt_room(lm, character_tokenizer(), ["the cat", "a big dog"])



def test_utterances_longer_than_the_context_are_left_out_with_a_count(capsys):
    from zoo.train.tts_speech import SpeechCodes, fitting

    lm = SpeechLM(text_vocab_size=31, max_text_tokens=8, num_codebooks=2, codebook_size=8, max_frames=12,
                  hidden_size=32, num_layers=1, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2)
    codes = SpeechCodes.__new__(SpeechCodes)  # three utterances of 5, 10 and 11 frames, without a codec
    codes.texts, codes.offsets = ["a", "b", "c"], torch.tensor([0, 5, 15, 26])
    codes.codes = torch.zeros(2, 26, dtype=torch.short)
    kept = fitting(lm, codes, "training")  # a row needs frames + END + the acoustic delay: 7, 12, 13
    assert [kept[i]["text"] for i in range(len(kept))] == ["a", "b"]
    assert "leaving out 1 of 3 training utterances" in capsys.readouterr().out
    codes.offsets = torch.tensor([0, 12, 26])
    codes.texts = ["a", "b"]
    with pytest.raises(SystemExit, match="--max-frames 14"):
        fitting(lm, codes, "training")


def test_a_text_stream_recipe_leaves_out_utterances_with_more_characters_than_frames(capsys):
    from zoo.train.tts_speech import SpeechCodes, fitting

    lm = SpeechLM(text_vocab_size=31, max_text_tokens=8, num_codebooks=2, codebook_size=32, max_frames=32,
                  hidden_size=32, num_layers=1, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2,
                  text_stream=True, text_lead=2)
    codes = SpeechCodes.__new__(SpeechCodes)  # two utterances of 5 frames: 4 characters, then 6
    codes.texts, codes.offsets = ["abcd", "abcdef"], torch.tensor([0, 5, 10])
    codes.codes = torch.zeros(2, 10, dtype=torch.short)
    codes.char_starts = [torch.linspace(0, 0.15, 4), torch.linspace(0, 0.18, 6)]
    kept = fitting(lm, codes, "training")
    assert [kept[i]["text"] for i in range(len(kept))] == ["abcd"]
    assert "leaving out 1 of 2 training utterances that say more characters" in capsys.readouterr().out
    codes.char_starts = [torch.linspace(0, 0.18, 6)] * 2
    with pytest.raises(SystemExit, match="as many frames as characters"):
        fitting(lm, codes, "training")

# ----------------------------------------------------------------------------- aligned text stream (DSM-TTS)
PAD = 0  # the character tokenizer's [PAD]


@pytest.fixture(scope="module")
def text_model():
    torch.manual_seed(0)
    return SpeechLM(text_vocab_size=31, max_text_tokens=8, num_codebooks=2, codebook_size=32, max_frames=40,
                    hidden_size=32, num_layers=2, num_heads=2, depth_hidden_size=16, depth_layers=1, depth_heads=2,
                    num_mctp_modules=2, text_dropout=0.0, text_stream=True, text_lead=3).eval()


def scripts_of(texts):
    return [token_ids(character_tokenizer(), t) for t in texts]


def test_the_text_stream_places_characters_in_order_on_the_frame_grid():
    assert text_stream_delays(3, text_lead=4) == [0, 4, 5, 5]
    stream = aligned_text_stream([5, 6, 7, 8], [1, 1, 2, 6], num_frames=8, pad_id=PAD)
    # 6 starts where 5 does: it takes the next free frame, and so pushes 7 on too
    assert stream.tolist() == [PAD, 5, 6, 7, PAD, PAD, 8, PAD]
    # characters that would run past the end move back, in order
    assert aligned_text_stream([5, 6, 7], [4, 4, 4], num_frames=6, pad_id=PAD).tolist() == [PAD, PAD, PAD, 5, 6, 7]
    with pytest.raises(ValueError, match="do not fit"):
        aligned_text_stream([5, 6, 7], [0, 1, 2], num_frames=2, pad_id=PAD)
    with pytest.raises(ValueError, match="one per character"):
        aligned_text_stream([5, 6], [0], num_frames=6, pad_id=PAD)


def test_a_text_stream_model_has_one_more_stream(text_model):
    assert (text_model.num_streams, text_model.semantic_stream, text_model.delays) == (3, 1, [0, 3, 4])
    ids, mask = prompt()
    frames = torch.randint(0, 32, (2, 3, 9))
    with torch.no_grad():
        assert text_model(ids, mask, frames).logits.shape == (2, 9, 3, 33)
    with pytest.raises(ValueError, match="text stream"):
        text_model(ids, mask, frames[:, 1:])
    with pytest.raises(ValueError, match="text_vocab_size <= codebook_size"):
        SpeechLM(text_vocab_size=31, num_codebooks=2, codebook_size=16, text_stream=True)


@pytest.mark.parametrize("schedule", [None, [1, 2]])
def test_the_text_stream_says_its_script_in_order_and_speech_ends_after_it(text_model, schedule):
    texts = ["the cat", "a dog"]
    scripts = scripts_of(texts)
    ids, mask = prompt(texts)
    with torch.no_grad():  # END as likely as any code (1 in 33 a frame): a seed whose rows end within 40 frames
        text_model.depth.body.head.weight[33:66].zero_()
    out = generate(text_model.backbone, 40 * 3, prefix_ids=ids, prefix_mask=mask,
                   step=FrameStep(text_model, schedule, scripts), generator=torch.Generator().manual_seed(11))
    frames = out.tokens.view(2, 40, 3).transpose(1, 2)  # [B, S, F]
    for row, script in enumerate(scripts):
        text = frames[row, 0]
        said = text[text != PAD].tolist()
        assert said == script  # exactly the script, in order (the budget leaves room for all of it)
        ends = (frames[row, 1] == text_model.end_id).nonzero()
        assert len(ends), "the row never ended"
        last_char = int((text != PAD).nonzero().max())
        assert int(ends[0]) > last_char  # END only once the script is out


def test_text_stream_decoding_is_the_same_with_and_without_the_cache(text_model):
    texts = ["we sat", "hi"]
    ids, mask = prompt(texts)
    kwargs = dict(prefix_ids=ids, prefix_mask=mask, uncond_prefix_ids=prompt(["", ""])[0],
                  uncond_prefix_mask=prompt(["", ""])[1], guidance_scale=2.0)
    a, b = (generate(text_model.backbone, 12 * 3, step=FrameStep(text_model, [1, 2], scripts_of(texts)),
                     generator=torch.Generator().manual_seed(3), use_cache=cache, **kwargs) for cache in (True, False))
    assert torch.equal(a.tokens, b.tokens)


def test_the_text_stream_needs_its_scripts(text_model, model):
    with pytest.raises(ValueError, match="needs the scripts"):
        FrameStep(text_model)
    with pytest.raises(ValueError, match="needs the scripts"):
        FrameStep(model, scripts=[[5, 6]])
    ids, mask = prompt()
    with pytest.raises(ValueError, match="one per row"):
        generate(text_model.backbone, 3, prefix_ids=ids, prefix_mask=mask, step=FrameStep(text_model, scripts=[[5]]))


def test_a_text_stream_added_to_a_trained_lm_keeps_what_it_learnt():
    torch.manual_seed(0)
    V = 32  # text ids share the codebooks' id range, so the codebooks need >= 31 ids
    model = SpeechLM(text_vocab_size=31, max_text_tokens=8, num_codebooks=Q, codebook_size=V, max_frames=24,
                     hidden_size=32, num_layers=2, num_heads=2, depth_hidden_size=16, depth_layers=1,
                     depth_heads=2, num_mctp_modules=3, text_dropout=0.0).eval()
    dsm = add_text_stream(model, text_lead=2).eval()
    assert (dsm.num_streams, dsm.delays, dsm.config.num_mctp_modules) == (Q + 1, [0, 2, 3, 3], 3)
    # with the fresh text stream silent, the backbone reads the same audio frames as before
    with torch.no_grad():
        dsm.frame_embedding.weight[:V + 2].zero_()
        ids, mask = prompt()
        frames = torch.randint(0, V, (2, Q, 6))
        with_text = torch.cat([torch.full((2, 1, 6), PAD), frames], dim=1)
        old_hidden, _ = model.backbone_states(ids, mask, frames)
        new_hidden, _ = dsm.backbone_states(ids, mask, with_text)
        assert torch.allclose(new_hidden, old_hidden, atol=1e-6)
        # each codebook's depth input, token embedding and head moved up one step, behind the text stream
        h, tokens = old_hidden[:, 0], frames[:, 0, :1]
        for k in range(Q):
            assert torch.equal(dsm.depth._step_input(h, k + 1), model.depth._step_input(h, k))
            assert torch.equal(dsm.depth._head(h[:, :16], k + 1), model.depth._head(h[:, :16], k))
            if k < Q - 1:
                assert torch.equal(dsm.depth._token_embedding(tokens, k + 1), model.depth._token_embedding(tokens, k))
    with pytest.raises(ValueError, match="already has a text stream"):
        add_text_stream(dsm)
    with pytest.raises(TypeError, match="needs a SpeechLM"):
        add_text_stream(model.backbone)
