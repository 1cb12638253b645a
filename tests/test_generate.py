"""The decode loop: cached == recomputed, seeds, generator lists, guidance, multi-token steps, errors."""

import pytest
import torch

from tests.conftest import tiny_transformer
from zoo.ar import ConstantGuidance, LinearGuidance, NextTokenStep, generate

LABELS = torch.tensor([1, 7, 3])


def _run(model, **kwargs):
    kwargs.setdefault("generator", torch.Generator().manual_seed(kwargs.pop("seed", 0)))
    return generate(model, kwargs.pop("num_tokens", 16), class_labels=kwargs.pop("class_labels", LABELS), **kwargs)


@pytest.mark.parametrize("guidance", [1.0, 3.0, LinearGuidance(4.0, per_token=True)])
@pytest.mark.parametrize("temperature,top_k,top_p", [(0, 0, 1.0), (1.0, 0, 1.0), (1.3, 8, 0.9)])
def test_cached_equals_recomputed(tiny_model, guidance, temperature, top_k, top_p):
    kwargs = dict(guidance_scale=guidance, temperature=temperature, top_k=top_k, top_p=top_p)
    cached = _run(tiny_model, **kwargs)
    recomputed = _run(tiny_model, use_cache=False, **kwargs)
    assert torch.equal(cached.tokens, recomputed.tokens)


def test_prompt_prefix_with_padding_mask():
    """Prompt prefixes of 3 tokens, left-padded, with CFG against an empty prompt (LlamaGen's t2i layout)."""
    model = tiny_transformer(num_classes=0, num_prefix_tokens=3)
    prompt = torch.tensor([[0, 5, 9], [4, 2, 8]])
    mask = torch.tensor([[False, True, True], [True, True, True]])
    kwargs = dict(prefix_ids=prompt, prefix_mask=mask, uncond_prefix_ids=torch.zeros_like(prompt),
                  uncond_prefix_mask=torch.tensor([[False, False, True]] * 2), guidance_scale=2.0)
    a = generate(model, 16, generator=torch.Generator().manual_seed(1), **kwargs)
    b = generate(model, 16, generator=torch.Generator().manual_seed(1), use_cache=False, **kwargs)
    assert torch.equal(a.tokens, b.tokens)
    # the padded position is invisible: changing its token changes nothing
    other = generate(model, 16, generator=torch.Generator().manual_seed(1),
                     **{**kwargs, "prefix_ids": torch.tensor([[63, 5, 9], [4, 2, 8]])})
    assert torch.equal(a.tokens, other.tokens)


def test_same_seed_same_tokens_and_seeds_differ(tiny_model):
    assert torch.equal(_run(tiny_model, seed=3).tokens, _run(tiny_model, seed=3).tokens)
    assert not torch.equal(_run(tiny_model, seed=3).tokens, _run(tiny_model, seed=4).tokens)


def test_generator_list_rows_are_independent(tiny_model):
    gens = [torch.Generator().manual_seed(s) for s in (10, 11, 12)]
    batch = generate(tiny_model, 16, class_labels=LABELS, generator=gens, guidance_scale=2.0).tokens
    single = generate(tiny_model, 16, class_labels=LABELS[:1], generator=torch.Generator().manual_seed(10),
                      guidance_scale=2.0).tokens
    assert torch.equal(batch[:1], single)


def test_returned_probs_are_the_sampling_distributions(tiny_model):
    out = _run(tiny_model, return_probs=True, top_k=5)
    assert out.probs.shape == (3, 16, 64)
    assert torch.allclose(out.probs.sum(-1), torch.ones(3, 16))
    assert ((out.probs > 0).sum(-1) <= 5).all()
    chosen = out.probs.gather(-1, out.tokens[..., None])
    assert (chosen > 0).all()


def test_guidance_changes_tokens_and_scale_one_is_off(tiny_model):
    greedy = dict(temperature=0)
    plain = _run(tiny_model, **greedy).tokens
    assert torch.equal(plain, _run(tiny_model, guidance_scale=ConstantGuidance(1.0), **greedy).tokens)
    assert not torch.equal(plain, _run(tiny_model, guidance_scale=5.0, **greedy).tokens)


def test_guidance_schedules():
    idx = torch.arange(4)
    assert torch.equal(ConstantGuidance(2.0)(idx, 4, 0, 4), torch.full((4,), 2.0))
    assert LinearGuidance(3.0, per_token=True)(idx, 4, 0, 4).tolist() == pytest.approx([1, 5 / 3, 7 / 3, 3])
    assert LinearGuidance(3.0)(idx[:1], 4, 2, 3).tolist() == [3.0]  # per step: last step reaches the scale
    half = LinearGuidance(3.0, per_token=True, ramp_fraction=0.5)(torch.arange(5), 5, 0, 5)
    assert half.tolist() == pytest.approx([1, 2, 3, 3, 3])  # the ramp ends half way
    with pytest.raises(ValueError, match="ramp_fraction"):
        LinearGuidance(3.0, ramp_fraction=0)


class PairStep(NextTokenStep):
    """Two tokens per step from the last two positions (block-parallel decoding): a multi-token step."""

    def num_steps(self, num_tokens):
        return num_tokens // 2

    def cache_length(self, num_prefix, num_tokens):
        return num_prefix + num_tokens - 2

    def sample(self, model, hidden, sample_fn):
        return sample_fn(model.logits(hidden[:, -2:]))


def test_multi_token_step_uses_the_same_loop():
    model = tiny_transformer(num_classes=0, num_prefix_tokens=2)
    kwargs = dict(prefix_ids=torch.tensor([[1, 2], [3, 4]]), step=PairStep(), guidance_scale=1.0)
    a = generate(model, 16, generator=torch.Generator().manual_seed(0), **kwargs)
    b = generate(model, 16, generator=torch.Generator().manual_seed(0), use_cache=False, **kwargs)
    assert a.tokens.shape == (2, 16) and torch.equal(a.tokens, b.tokens)


def test_progress_callback_sees_every_step(tiny_model):
    seen = []
    _run(tiny_model, num_tokens=5, callback=lambda i, t: seen.append((i, t.shape[1])))
    assert seen == [(i, i + 1) for i in range(5)]


@pytest.mark.parametrize("kwargs,message", [
    (dict(guidance_scale=-1.0), "guidance_scale must be"),
    (dict(top_p=0.0), "top_p must lie in"),
    (dict(top_p=1.5), "top_p must lie in"),
    (dict(top_k=-1), "top_k must be"),
    (dict(temperature=-0.5), "temperature must be"),
    (dict(class_labels=torch.tensor([], dtype=torch.long)), "batch is empty"),
    (dict(class_labels=torch.tensor([11])), r"class labels must lie in \[0, 10\]"),
    (dict(num_tokens=17), "exceed the model's context"),
    (dict(num_tokens=0), "num_tokens must be a positive integer"),
    (dict(generator=[torch.Generator()]), "got 1 generators for a batch of 3"),
    (dict(compile="yes"), "compile must be True or False"),
])
def test_bad_arguments_raise_clear_errors(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _run(tiny_model, **kwargs)


def test_compiled_decode_is_made_once_and_leaves_room_for_many_models(tiny_model):
    """Every compiled model shares forward_hidden's compile cache: dynamo's default 8 entries would end a
    process that compiles a speech LM's backbone and depth transformer at a few batch sizes."""
    import torch._dynamo

    from zoo.ar.transformer import RECOMPILE_LIMIT

    # torch's own patch, not pytest's monkeypatch: pytest >= 9.2 deletes a config entry on undo
    with torch._dynamo.config.patch(recompile_limit=8):
        step = tiny_model.compiled_decode()  # torch.compile is lazy: nothing compiles until a call
        assert tiny_model.compiled_decode() is step and torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT


def test_prompt_guidance_needs_an_unconditional_prompt():
    model = tiny_transformer(num_classes=0, num_prefix_tokens=2)
    with pytest.raises(ValueError, match="uncond_prefix_ids"):
        generate(model, 4, prefix_ids=torch.tensor([[1, 2]]), guidance_scale=2.0)
    with pytest.raises(ValueError, match="pad it to that length"):
        generate(model, 4, prefix_ids=torch.tensor([[1, 2, 3]]))  # prefix longer than the context holds
    with pytest.raises(ValueError, match="out of range"):
        generate(model, 4, prefix_ids=torch.tensor([[1, 64]]))


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_prompt_tokens_continue_a_sequence(tiny_model, guidance):
    """Given the first tokens, generation continues them: cached == recomputed, the given tokens come
    back unchanged, and the continued tokens' distributions are the teacher-forced ones."""
    full = _run(tiny_model, guidance_scale=guidance).tokens
    prompt = full[:, :6]
    kwargs = dict(prompt_tokens=prompt, guidance_scale=guidance, return_probs=True, seed=5)
    cached, recomputed = _run(tiny_model, **kwargs), _run(tiny_model, use_cache=False, **kwargs)
    assert torch.equal(cached.tokens, recomputed.tokens) and torch.equal(cached.tokens[:, :6], prompt)
    assert torch.equal(cached.probs[:, :6].argmax(-1), prompt)
    # teacher forcing over the finished sequence gives the same distributions for tokens 6..15
    forced = tiny_model(cached.tokens[:, :-1], class_labels=LABELS)[:, 6:].float()
    if guidance != 1.0:
        uncond = tiny_model(cached.tokens[:, :-1], class_labels=torch.full((3,), 10))[:, 6:].float()
        forced = uncond + guidance * (forced - uncond)
    torch.testing.assert_close(cached.probs[:, 6:], torch.softmax(forced, -1), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="between 1 and num_tokens - 1"):
        _run(tiny_model, prompt_tokens=full)
    with pytest.raises(ValueError, match="prompt_tokens must be"):
        _run(tiny_model, prompt_tokens=prompt[:2])
