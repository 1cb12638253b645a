"""The decode loop shared by every zoo AR model.

    prefill(prefix)                                  one call over the whole condition prefix
    repeat: tokens = step.sample(hidden)             a step emits one or more tokens
            hidden = model(step.embed(tokens))       only the new positions, through the KV cache

What a step emits is up to its `Step` object: `NextTokenStep` emits one token; later methods emit a
window of tokens, the codebooks of an audio frame or a whole scale by providing their own step, with
the same loop, cache, guidance and sampling. CFG runs the conditional and unconditional rows as one
batch [cond; uncond]. Nothing in the loop reads values back to the host.

`generate_steps` is the loop itself, as a generator that yields the tokens so far after every step
(streaming consumers decode them as they come and may stop early); `generate` runs it to the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from .sampling import apply_guidance, as_guidance, check_sampling_args, logits_to_probs, normalize_generators
from .sampling import sample_from_probs


@dataclass
class GenerationOutput(BaseOutput):
    """tokens [B, num_tokens]; probs [B, num_tokens, vocab] (the sampling distributions) if asked for.

    Examples:
        >>> out = generate(model, 16, class_labels=torch.tensor([1]), return_probs=True)  # doctest: +SKIP
        >>> out.tokens.shape, out.probs.shape, out.probs.sum(-1)[0, 0]                    # doctest: +SKIP
        (torch.Size([1, 16]), torch.Size([1, 16, 1024]), tensor(1.))
    """

    tokens: torch.Tensor
    probs: torch.Tensor | None = None


class NextTokenStep:
    """The plain step: the last position's logits give one token, which is the next input.

    A step tells the loop how many engine steps `num_tokens` take, how long the KV cache must be, how
    hidden states become tokens (`sample`) and tokens the next inputs (`embed`); other steps emit a
    window (`zoo.ar.token_shuffle.WindowStep`), a scale (`zoo.ar.next_scale.NextScaleStep`) or an audio
    frame (`zoo.ar.speech.FrameStep`) through the same loop.

    Examples:
        >>> step = NextTokenStep()
        >>> step.num_steps(256), step.cache_length(num_prefix=1, num_tokens=256)
        (256, 256)
        >>> # generate(model, 256, class_labels=labels, step=step) is the default
    """

    def num_steps(self, num_tokens: int) -> int:
        return num_tokens

    def cache_length(self, num_prefix: int, num_tokens: int) -> int:
        """Positions the cache must hold: the prefix and every token but the last (never fed back)."""
        return num_prefix + num_tokens - 1

    def sample(self, model, hidden: torch.Tensor, sample_fn) -> torch.Tensor:
        """hidden [R, n, D] of the newest positions -> tokens [B, k]. sample_fn(logits [R, k, V]) does CFG and
        sampling; sample_fn(None, forced=tokens [B, k]) emits tokens a step already knows (no sampling)."""
        return sample_fn(model.logits(hidden[:, -1:]))

    def embed(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [R, k] -> the next inputs [R, n, D]."""
        return model.embed_inputs(tokens)


def _condition_rows(model, batch_size, class_labels, prefix_ids, prefix_embeds, uncond_prefix_ids,
                    uncond_prefix_embeds, use_cfg):
    cond = model.embed_condition(class_labels, prefix_ids, prefix_embeds)
    if cond.shape[0] != batch_size:
        raise ValueError(f"the condition has {cond.shape[0]} rows for a batch of {batch_size}.")
    if not use_cfg:
        return cond
    if class_labels is not None:
        uncond = model.embed_condition(class_labels=torch.full((batch_size,), model.null_class, device=model.device))
    elif uncond_prefix_ids is not None or uncond_prefix_embeds is not None:
        uncond = model.embed_condition(prefix_ids=uncond_prefix_ids, prefix_embeds=uncond_prefix_embeds)
        if uncond.shape[0] != batch_size:
            raise ValueError(f"the unconditional prefix has {uncond.shape[0]} rows for a batch of {batch_size}.")
    else:
        raise ValueError("classifier-free guidance with a prompt prefix needs uncond_prefix_ids or "
                         "uncond_prefix_embeds (e.g. the empty prompt); or pass guidance_scale=1.")
    return torch.cat([cond, uncond])


def _batch_size(class_labels, prefix_ids, prefix_embeds) -> int:
    for x in (class_labels, prefix_ids, prefix_embeds):
        if x is not None:
            return len(x)
    raise ValueError("pass a condition: class_labels, prefix_ids or prefix_embeds.")


def _row_prefix_mask(prefix_mask, uncond_prefix_mask, batch_size, num_prefix, use_cfg):
    if prefix_mask is None and uncond_prefix_mask is None:
        return None
    ones = torch.ones(batch_size, num_prefix, dtype=torch.bool)
    masks = [ones if prefix_mask is None else prefix_mask]
    if use_cfg:
        masks.append(masks[0] if uncond_prefix_mask is None else uncond_prefix_mask)
    for m in masks:
        if tuple(m.shape) != (batch_size, num_prefix):
            raise ValueError(f"prefix masks must be [B, num_prefix_tokens] = [{batch_size}, {num_prefix}], "
                             f"got {tuple(m.shape)}.")
    return torch.cat([m.bool().to(masks[0].device) for m in masks])


def generate(model, num_tokens: int, **kwargs) -> GenerationOutput:
    """Sample `num_tokens` tokens after a condition prefix: `generate_steps` run to the end (same arguments).

    Examples:
        >>> import torch
        >>> from zoo import ARTransformer, generate
        >>> model = ARTransformer(vocab_size=64, hidden_size=64, num_layers=2, num_heads=4, num_classes=10,
        ...                       grid_size=(4, 4)).eval()
        >>> out = generate(model, 16, class_labels=torch.tensor([3, 7]), guidance_scale=2.0,
        ...                generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
        >>> out.tokens.shape
        torch.Size([2, 16])
        >>> same = generate(model, 16, class_labels=torch.tensor([3]), guidance_scale=2.0,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> bool((same.tokens[0] == out.tokens[0]).all())   # row i depends on generator i alone
        True
    """
    output = None
    for output in generate_steps(model, num_tokens, **kwargs):
        pass
    return output


@torch.no_grad()
def generate_steps(
    model,
    num_tokens: int,
    *,
    class_labels=None,
    prefix_ids: torch.Tensor | None = None,
    prefix_embeds: torch.Tensor | None = None,
    uncond_prefix_ids: torch.Tensor | None = None,
    uncond_prefix_embeds: torch.Tensor | None = None,
    prefix_mask: torch.Tensor | None = None,
    uncond_prefix_mask: torch.Tensor | None = None,
    guidance_scale=1.0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator=None,
    prompt_tokens: torch.Tensor | None = None,
    step=None,
    sampler=None,
    return_probs: bool = False,
    use_cache: bool = True,
    compile: bool = False,
    callback=None,
    progress: bool = False,
):
    """Sample `num_tokens` tokens after a condition prefix with an `ARTransformer`, step by step.

    A generator: after every step it yields a `GenerationOutput` whose `tokens` [B, n] (and `probs`)
    are views of the n tokens produced so far; the last one holds all `num_tokens`. Breaking out of
    the loop stops generation there (a streaming consumer that saw an end-of-sequence token).

    Args:
        class_labels / prefix_ids / prefix_embeds: the condition (exactly one), B rows.
        uncond_prefix_ids / uncond_prefix_embeds: the unconditional prefix for CFG with prompts;
            class-conditional models use the null class.
        prefix_mask / uncond_prefix_mask: [B, P] bool, False on prefix padding.
        guidance_scale: a number >= 0 (1 = no guidance) or a `GuidanceSchedule`.
        temperature (0 = greedy), top_k (0 = off), top_p (1 = off): the sampling distribution.
        generator: a torch.Generator, or a list with one per row (row i then depends on it alone).
        prompt_tokens: [B, n] the first n of the num_tokens tokens, given (continuation: an image's
            first rows, an audio prompt, the tokens a distilled model handed over); they are read in the
            prefill pass with the prefix and returned unchanged at the start of `tokens`.
        step: how a step turns hidden states into tokens and tokens into inputs (default: one token);
            a step with a `check_tokens(ids, name)` method validates prompt_tokens itself.
        sampler: a callable (probs [B, k, V], start) -> ids [B, k] that replaces random sampling for
            tokens start..start+k-1 (distilled decoding's flow map, `zoo.flow.DiracFlowSampler`).
        return_probs: also return the sampling distribution of every token.
        use_cache: False recomputes the whole sequence every step (the reference for tests).
        compile: run the decode step through torch.compile (CUDA graphs on GPU).
        callback: called as callback(step_index, tokens_so_far [B, n]) after each step.

    Examples:
        Stream tokens as they come, and stop early:

        >>> for out in generate_steps(model, 256, class_labels=labels):   # doctest: +SKIP
        ...     show(out.tokens)                   # [B, n] tokens so far
        ...     if enough(out.tokens):
        ...         break
    """
    if step is None and model.input_vocab_size != model.config.vocab_size:
        raise ValueError(f"the model reads {model.input_vocab_size} input ids but predicts {model.config.vocab_size}: "
                         "sampled tokens cannot be fed back; pass a `step` whose embed maps them to inputs.")
    step = step or NextTokenStep()
    check_sampling_args(temperature, top_k, top_p)
    guidance = as_guidance(guidance_scale)
    use_cfg = not guidance.is_identity
    if not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_tokens must be a positive integer, got {num_tokens!r}.")
    B = _batch_size(class_labels, prefix_ids, prefix_embeds)
    if B == 0:
        raise ValueError("the batch is empty: pass at least one condition row.")
    P = model.config.num_prefix_tokens
    # positions the sequence occupies (a step may say; by default every cached position and the last input)
    occupied = step.positions(P, num_tokens) if hasattr(step, "positions") else step.cache_length(P, num_tokens) + 1
    if occupied > model.max_positions:
        raise ValueError(f"the prefix ({P}) plus {num_tokens} tokens exceed the model's context of "
                         f"{model.max_positions} positions; ask for fewer tokens.")
    generators = normalize_generators(generator, B)
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}.")
    if compile and not use_cache:
        raise ValueError("compile=True needs use_cache=True.")

    prefix = _condition_rows(model, B, class_labels, prefix_ids, prefix_embeds, uncond_prefix_ids,
                             uncond_prefix_embeds, use_cfg)  # [R, P, D]
    row_mask = _row_prefix_mask(prefix_mask, uncond_prefix_mask, B, P, use_cfg)
    device = prefix.device
    if row_mask is not None:
        row_mask = row_mask.to(device)
    num_given = _check_prompt(model, step, prompt_tokens, B, num_tokens)
    num_steps = step.num_steps(num_tokens - num_given)
    if hasattr(step, "reset"):  # steps with state (frames emitted, MCTP caches) start afresh
        step.reset(num_tokens=num_tokens, num_given=num_given, batch_size=B)

    tokens = torch.empty(B, num_tokens, dtype=torch.long, device=device)
    vocab_size = getattr(step, "vocab_size", model.config.vocab_size)  # what the step samples from
    probs_out = torch.empty(B, num_tokens, vocab_size, device=device) if return_probs else None
    state = {"produced": num_given, "step": 0}

    def record_given(start: int, given: torch.Tensor):
        """Tokens [B, k] not sampled (the prompt, a step's forced ones) at start: a given token had probability
        1 (an input-only id, e.g. START, none)."""
        end = start + given.shape[1]
        tokens[:, start:end] = given
        if probs_out is not None:
            probs_out[:, start:end] = (given[..., None] == torch.arange(vocab_size, device=device)).float()

    if num_given:
        record_given(0, prompt_tokens.to(device))

    def sample_fn(logits: torch.Tensor | None, forced: torch.Tensor | None = None) -> torch.Tensor:
        """logits [R, k, V] -> tokens [B, k]: guidance, filtering, sampling, bookkeeping. forced: tokens [B, k]
        the step emits as they are (e.g. START of a stream not yet due), recorded as given tokens are; no
        logits needed and no random numbers drawn."""
        start = state["produced"]
        k = forced.shape[1] if forced is not None else logits.shape[1]
        if start + k > num_tokens:
            raise RuntimeError(f"the step emitted {start + k} tokens, more than the {num_tokens} asked for.")
        if forced is not None:
            record_given(start, forced)
            state["produced"] = start + k
            return forced
        if use_cfg:
            index = torch.arange(start, start + k, device=device)
            logits = apply_guidance(logits, guidance(index, num_tokens, state["step"], num_steps).to(logits.dtype))
        probs = logits_to_probs(logits, temperature, top_k, top_p)
        if sampler is not None:
            new = sampler(probs, start)
        else:
            new = probs.argmax(-1) if temperature == 0 else sample_from_probs(probs, generators)
        tokens[:, start:start + k] = new
        if probs_out is not None:
            probs_out[:, start:start + k] = probs
        state["produced"] = start + k
        return new

    if use_cache:
        model.setup_cache(prefix.shape[0], step.cache_length(P, num_tokens), prefix_mask=row_mask, device=device)
        decode = model.decode_step(compile)
        first = prefix  # prefill: the prefix and any prompt tokens in one pass
        if num_given:
            first = torch.cat([prefix, _prompt_inputs(model, step, tokens[:, :num_given], use_cfg)], dim=1)
        written = first.shape[1]
        hidden = model.forward_hidden(first, input_pos=torch.arange(written, device=device), kv_len=written)
        input_pos = None
    else:
        sequence = prefix
        if num_given:
            sequence = torch.cat([prefix, _prompt_inputs(model, step, tokens[:, :num_given], use_cfg)], dim=1)
        hidden = model.forward_hidden(sequence, prefix_mask=row_mask)

    bar = tqdm(total=num_steps, desc="AR decode", disable=not progress)
    for i in range(num_steps):
        state["step"] = i
        new = step.sample(model, hidden, sample_fn)
        bar.update(1)
        if callback is not None:
            callback(i, tokens[:, : state["produced"]])
        if i == num_steps - 1:
            break
        yield _so_far(tokens, probs_out, state["produced"])
        x = step.embed(model, torch.cat([new, new]) if use_cfg else new)  # [R, n, D]
        if use_cache:
            if input_pos is None or len(input_pos) != x.shape[1]:
                input_pos = torch.arange(written, written + x.shape[1], device=device)
            else:  # in place: a compiled step / CUDA graph keeps reading the same tensor
                input_pos += x.shape[1]
            written += x.shape[1]
            hidden = decode(x, input_pos, written)
        else:
            sequence = torch.cat([sequence, x], dim=1)
            hidden = model.forward_hidden(sequence, prefix_mask=row_mask)[:, -x.shape[1]:]
    bar.close()
    if state["produced"] != num_tokens:
        raise RuntimeError(f"the steps emitted {state['produced']} tokens, not the {num_tokens} asked for.")
    yield GenerationOutput(tokens=tokens, probs=probs_out)


def _so_far(tokens, probs, produced: int) -> GenerationOutput:
    return GenerationOutput(tokens=tokens[:, :produced], probs=None if probs is None else probs[:, :produced])


def _check_prompt(model, step, prompt_tokens, batch_size: int, num_tokens: int) -> int:
    if prompt_tokens is None:
        return 0
    if prompt_tokens.dim() != 2 or prompt_tokens.shape[0] != batch_size:
        raise ValueError(f"prompt_tokens must be [B, n] = [{batch_size}, n], got {tuple(prompt_tokens.shape)}.")
    if not 0 < prompt_tokens.shape[1] < num_tokens:
        raise ValueError(f"prompt_tokens must hold between 1 and num_tokens - 1 = {num_tokens - 1} tokens, got "
                         f"{prompt_tokens.shape[1]}.")
    getattr(step, "check_tokens", model.check_token_ids)(prompt_tokens, "prompt_tokens")
    return prompt_tokens.shape[1]


def _prompt_inputs(model, step, prompt: torch.Tensor, use_cfg: bool) -> torch.Tensor:
    return step.embed(model, torch.cat([prompt, prompt]) if use_cfg else prompt)
