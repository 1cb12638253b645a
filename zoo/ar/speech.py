"""Speech language models on codec tokens: multi-stream frames, delays, a depth transformer and MCTP.

Moshi's layout on the shared engine (`zoo.ar.generate`), for text-to-speech:

    sequence        [text prompt, left-padded, ending in [SOA]] [frame 0] [frame 1] ...
    frame input     the sum over codebooks q of emb_q(token_q)              (Moshi's summed embeddings)
    delays          frame f holds codebook q's token of audio frame f - delay_q: the acoustic codebooks
                    one frame behind the semantic one (Moshi's acoustic delay)
    one step        the backbone's hidden state at the last position -> `DepthTransformer` -> the Q
                    tokens of the next frame, sampled in order (a multi-token step of the engine)

Token ids of every stream: 0..V-1 the codec's codes, V = END (end of speech, predicted on the semantic
stream), V + 1 = START (a delayed stream before its first token; input only, as Moshi's initial token).

Aligned text stream (`text_stream=True`; Kyutai's delayed streams modeling, DSM-TTS): stream 0 holds the
transcript's characters at the frames where they are spoken (from CTC forced alignment) and [PAD]
elsewhere, and the audio streams run `text_lead` frames behind it, so the model reads each character a
little before it has to say it. The model predicts the text stream too, which is how it decides *when*
to move on: in generation the text stream may only take [PAD] or the next character of the script, and
the semantic stream may say END only once the whole script is out. The prefix still holds the whole text.

MCTP (VITA-Audio): K light modules chained after the backbone. Module k is one decoder layer over
W_k [RMSNorm(emb(frame t+k-1)) ; RMSNorm(h^{k-1}_t)] (h^0 = the backbone), shares the frame embeddings,
the final norm and the depth head, and predicts frame t+k. A schedule [M1, m1, M2, m2, ...] (cycled)
says how many frames the backbone emits, then how many the modules emit from its last hidden state;
the backbone then reads all of them in one pass. Each module keeps its own KV cache over the frames,
filled lazily, so decoding with MCTP equals the teacher-forced training computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import cycle

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn
from torch.nn import functional as F

from ..nn.attention import KVCache
from ..nn.linear import Linear
from ..nn.mlp import llama_ffn_dim
from ..nn.norm import RMSNorm
from ..nn.rope import rope_rotation
from ..utils.io import AtomicSaveMixin
from .transformer import ARTransformer, TransformerBlock

# VITA-Audio's inference modes (mtp_inference_mode): [backbone frames, MCTP frames, ...], cycled.
MCTP_SCHEDULES = {"vanilla": [1, 0], "balance": [1, 4, 3, 8, 4, 10], "boost": [1, 10, 4, 10], "turbo": [1, 10]}
NEG = -1e9  # a logit that never wins; finite so that CFG's uncond + s * (cond - uncond) stays finite


# ----------------------------------------------------------------------------- delays
def moshi_delays(num_codebooks: int, acoustic_delay: int = 1) -> list[int]:
    """Semantic codebook on time, the acoustic ones `acoustic_delay` frames behind (Moshi: 1)."""
    return [0] + [acoustic_delay] * (num_codebooks - 1)


def text_stream_delays(num_codebooks: int, text_lead: int, acoustic_delay: int = 1) -> list[int]:
    """The text stream on time, the audio `text_lead` frames behind it (Moshi's delays after that)."""
    return [0] + [text_lead + d for d in moshi_delays(num_codebooks, acoustic_delay)]


def aligned_text_stream(char_ids: list[int], start_frames, num_frames: int, pad_id: int) -> torch.Tensor:
    """A transcript on the frame grid: [num_frames] ids, character i at the frame where it starts, [PAD]
    elsewhere. Characters that start on a frame already taken move on to the next free one (they can come
    faster than frames), and the last ones move back where that runs past the end; their order is kept.
    Raises ValueError for more characters than frames."""
    if len(char_ids) != len(start_frames):
        raise ValueError(f"{len(char_ids)} characters but {len(start_frames)} start frames; pass one per character.")
    if len(char_ids) > num_frames:
        raise ValueError(f"{len(char_ids)} characters do not fit into {num_frames} frames, one a frame.")
    frames, previous = [], -1
    for start in start_frames:
        previous = max(int(start), previous + 1)
        frames.append(previous)
    following = num_frames
    for i in reversed(range(len(frames))):
        frames[i] = following = min(frames[i], following - 1)
    stream = torch.full((num_frames,), pad_id, dtype=torch.long)
    stream[frames] = torch.as_tensor(char_ids, dtype=torch.long)
    return stream


def delay_codes(codes: torch.Tensor, delays: list[int], start_id: int, end_id: int) -> torch.Tensor:
    """codes [B, Q, T] -> frames [B, Q, T + max(delays)]: stream q shifted right by delays[q], START
    before it and END after it."""
    B, Q, T = codes.shape
    if len(delays) != Q:
        raise ValueError(f"{len(delays)} delays for {Q} codebooks; pass one delay per codebook.")
    frames = codes.new_full((B, Q, T + max(delays)), end_id)
    for q, d in enumerate(delays):
        frames[:, q, :d] = start_id
        frames[:, q, d:d + T] = codes[:, q]
    return frames


def undelay_codes(frames: torch.Tensor, delays: list[int]) -> torch.Tensor:
    """frames [B, Q, F] -> codes [B, Q, F - max(delays)]: the inverse of `delay_codes`."""
    B, Q, num_frames = frames.shape
    if len(delays) != Q:
        raise ValueError(f"{len(delays)} delays for {Q} codebooks; pass one delay per codebook.")
    T = num_frames - max(delays)
    if T < 0:
        raise ValueError(f"{num_frames} frames are fewer than the largest delay {max(delays)}.")
    return torch.stack([frames[:, q, d:d + T] for q, d in enumerate(delays)], dim=1)


def mctp_plan(schedule: list[int] | str | None, num_frames: int, num_modules: int) -> list[int]:
    """Frames emitted by each engine step: [1, 1, ...] without MCTP; with a schedule [M1, m1, M2, m2, ...]
    (a VITA-Audio mode name, or "M1,m1,..." as on the command line) the backbone emits M frames, the last of
    them followed by m MCTP frames."""
    if schedule is None:
        return [1] * num_frames
    if isinstance(schedule, str) and schedule.replace(",", "").isdigit():
        schedule = [int(n) for n in schedule.split(",")]
    if isinstance(schedule, str):
        if schedule not in MCTP_SCHEDULES:
            raise ValueError(f"unknown MCTP schedule {schedule!r}; pass one of {sorted(MCTP_SCHEDULES)} or a list.")
        schedule = MCTP_SCHEDULES[schedule]
    schedule = list(schedule)
    if len(schedule) < 2 or len(schedule) % 2 or not all(isinstance(n, int) and n >= 0 for n in schedule):
        raise ValueError(f"an MCTP schedule is pairs [backbone frames, MCTP frames, ...] of integers >= 0, got "
                         f"{schedule}.")
    pairs = list(zip(schedule[::2], schedule[1::2]))
    if any(m < 1 for m, _ in pairs):
        raise ValueError(f"every backbone count in the schedule must be >= 1, got {schedule}.")
    if max(n for _, n in pairs) > num_modules:
        raise ValueError(f"the schedule {schedule} asks for {max(n for _, n in pairs)} MCTP frames in a row; this "
                         f"model has {num_modules} MCTP modules.")
    plan, left = [], num_frames
    for backbone_frames, mctp_frames in cycle(pairs):
        for j in range(backbone_frames):
            if left == 0:
                return plan
            n = 1 + (min(mctp_frames, left - 1) if j == backbone_frames - 1 else 0)
            plan.append(n)
            left -= n
        if left == 0:
            return plan


# ----------------------------------------------------------------------------- modules
class DepthTransformer(nn.Module):
    """Moshi's depth transformer: the Q tokens of one frame, in order, from the backbone's hidden state.

    Step k reads in_proj[k](h) + emb_{k-1}(token k-1) (step 0: in_proj[0](h) alone) and its own output
    head gives token k. Input projections and heads are per step (Moshi's `depformer_multi_linear` and
    `linears`); Moshi also gives each step its own attention and FFN weights (`weights_per_step`), zoo
    shares them and numbers the steps with 1D RoPE instead (a smaller model for small data).
    """

    def __init__(self, num_codebooks: int, num_outputs: int, num_inputs: int, input_size: int, hidden_size: int,
                 num_layers: int, num_heads: int, per_step_input: bool = True, dropout: float = 0.0):
        super().__init__()
        self.num_codebooks, self.num_outputs, self.num_inputs = num_codebooks, num_outputs, num_inputs
        self.body = ARTransformer(
            vocab_size=num_codebooks * num_outputs, input_vocab_size=max(num_codebooks - 1, 1) * num_inputs,
            hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, num_prefix_tokens=0,
            seq_len=num_codebooks, position_embedding="rope_1d", resid_dropout=dropout, ffn_dropout=dropout)
        self.in_proj = nn.ModuleList(Linear(input_size, hidden_size, bias=False)
                                     for _ in range(num_codebooks if per_step_input else 1))

    def _step_input(self, hidden: torch.Tensor, k: int) -> torch.Tensor:
        return self.in_proj[k if len(self.in_proj) > 1 else 0](hidden)

    def _token_embedding(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Token of codebook k (ids 0..num_inputs-1) -> its embedding as the input of step k + 1."""
        return self.body.token_embedding(tokens + k * self.num_inputs)

    def _head(self, hidden: torch.Tensor, k: int) -> torch.Tensor:
        weight = self.body.head.weight.view(self.num_codebooks, self.num_outputs, -1)[k]
        return F.linear(hidden, weight).float()

    def forward(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: hidden [N, input_size] and the frames' tokens [N, Q] -> logits [N, Q, num_outputs]."""
        Q = self.num_codebooks
        x = torch.stack([self._step_input(hidden, k) for k in range(Q)], dim=1)  # [N, Q, D]
        if Q > 1:
            previous = torch.stack([self._token_embedding(tokens[:, k], k) for k in range(Q - 1)], dim=1)
            x = x + F.pad(previous, (0, 0, 1, 0))
        h = self.body.forward_hidden(x)
        weight = self.body.head.weight.view(Q, self.num_outputs, -1)
        return torch.einsum("nqd,qvd->nqv", h, weight).float()

    def sample(self, hidden: torch.Tensor, choose, compile: bool = False, num_steps: int | None = None) -> torch.Tensor:
        """hidden [R, input_size] -> tokens [R, num_steps]: step k's logits [R, 1, num_outputs] go to
        choose(k, logits) -> the token [R, 1] that step k + 1 reads (sampling, CFG and forcing live there).
        num_steps: the first codebooks only (default all Q), when the caller knows the rest (streams not yet
        due, whose tokens are START whatever the model says). compile=True runs each step's body through
        `ARTransformer.decode_step(compile=True)` (Moshi runs its depth transformer under CUDA graphs: Q small
        steps per frame are launch-bound)."""
        num_steps = self.num_codebooks if num_steps is None else num_steps
        if not 0 <= num_steps <= self.num_codebooks:
            raise ValueError(f"num_steps must be in 0..{self.num_codebooks}, got {num_steps}.")
        R = hidden.shape[0]
        self.body.setup_cache(R, self.num_codebooks, device=hidden.device, dtype=hidden.dtype)
        decode = self.body.decode_step(compile)
        out = [hidden.new_empty(R, 0, dtype=torch.long)]
        for k in range(num_steps):
            x = self._step_input(hidden, k)[:, None]  # [R, 1, D]
            if k:
                x = x + self._token_embedding(out[-1], k - 1)
            h = decode(x, torch.tensor([k], device=hidden.device), k + 1)
            out.append(choose(k, self._head(h, k)))
        return torch.cat(out, dim=1)


class MCTPModule(nn.Module):
    """One VITA-Audio MCTP module: a decoder layer over W [RMSNorm(frame embedding) ; RMSNorm(previous hidden)]."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        self.frame_norm = RMSNorm(dim, eps=eps)
        self.hidden_norm = RMSNorm(dim, eps=eps)
        self.proj = Linear(2 * dim, dim, bias=False)
        self.block = TransformerBlock(dim, num_heads, num_heads, ffn_dim, eps, 0.0, dropout, dropout)

    def forward(self, frame_embeds, hidden, rope, mask=None, input_pos=None, is_causal=False, kv_len=None):
        x = self.proj(torch.cat([self.frame_norm(frame_embeds), self.hidden_norm(hidden)], dim=-1))
        return self.block(x, rope, mask, input_pos, is_causal, kv_len)


@dataclass
class SpeechLMOutput(BaseOutput):
    """logits [B, F, Q, V + 1] for every frame; mctp_logits[k - 1] [B, n, Q, V + 1] from MCTP module k for
    the frames mctp_targets[k - 1] [n] (all of k..F-1 unless subsampled)."""

    logits: torch.Tensor
    mctp_logits: list | None = None
    mctp_targets: list | None = None


class SpeechLM(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """Text-to-speech over the codes of a `SpeechCodec`: a text prefix, then delayed multi-codebook frames.

    Args:
        text_vocab_size: ids of the text tokenizer (with its special tokens).
        max_text_tokens: the prefix length (prompts are left-padded to it, [SOA] last).
        num_codebooks, codebook_size: Q and V of the codec (its first Q codebooks).
        delays: frames each stream lags behind; default Moshi's [0, 1, 1, ...] (with a text stream
            [0, L, L + 1, ...] for text_lead L).
        max_frames: frames after the prefix (the context), delays and END included.
        hidden_size, num_layers, num_heads: the backbone (temporal) transformer, 1D RoPE.
        depth_hidden_size, depth_layers, depth_heads, per_step_input: the depth transformer.
        num_mctp_modules: K MCTP modules (0: none).
        text_dropout: probability of training a row on the empty prompt (for classifier-free guidance).
        text_stream: add the aligned text stream (stream 0, before the codebooks; DSM-TTS, see the module).
        text_lead: frames the audio runs behind the text stream (default delays only).
        text_pad_id: the text stream's filler between characters (the character tokenizer's [PAD]).

    Examples:
        >>> from zoo import SpeechLM
        >>> lm = SpeechLM(text_vocab_size=31, max_text_tokens=32, num_codebooks=4, codebook_size=64, max_frames=50,
        ...               hidden_size=64, num_layers=2, num_heads=4, depth_hidden_size=32, depth_layers=1,
        ...               depth_heads=2)
        >>> lm.num_codebooks, lm.max_delay          # the acoustic codebooks run one frame behind
        (4, 1)
        >>> # CodecTTSPipeline(lm=lm, codec=zoo.load("codec-speech"), ...) generates speech with it
    """

    # checkpoints from before the headless backbone hold an empty [0, hidden] head
    _keys_to_ignore_on_load_unexpected = [r"^backbone\.head\.weight$"]

    @register_to_config
    def __init__(self, text_vocab_size: int = 31, max_text_tokens: int = 200, num_codebooks: int = 8,
                 codebook_size: int = 1024, delays: list[int] | None = None, max_frames: int = 400,
                 hidden_size: int = 256, num_layers: int = 6, num_heads: int = 8, depth_hidden_size: int = 256,
                 depth_layers: int = 2, depth_heads: int = 4, per_step_input: bool = True, num_mctp_modules: int = 0,
                 text_dropout: float = 0.1, dropout: float = 0.0, text_stream: bool = False, text_lead: int = 6,
                 text_pad_id: int = 0):
        super().__init__()
        streams = num_codebooks + int(text_stream)
        if delays is None:
            delays = text_stream_delays(num_codebooks, text_lead) if text_stream else moshi_delays(num_codebooks)
        delays = list(delays)
        if len(delays) != streams or min(delays) < 0:
            raise ValueError(f"delays must be {streams} integers >= 0 (one per stream), got {delays}.")
        if text_stream and not 0 <= text_pad_id < text_vocab_size <= codebook_size:
            raise ValueError(f"a text stream needs text_pad_id < text_vocab_size <= codebook_size (its ids share the "
                             f"codebooks' id range), got {text_pad_id}, {text_vocab_size}, {codebook_size}.")
        if max_frames <= max(delays) + 1:
            raise ValueError(f"max_frames={max_frames} leaves no room for audio after the delays {delays}.")
        self.delays = delays
        self.end_id, self.start_id = codebook_size, codebook_size + 1
        # no output head of its own (vocab_size=0): the depth transformer predicts the codebooks
        self.backbone = ARTransformer(
            vocab_size=0, input_vocab_size=text_vocab_size, hidden_size=hidden_size, num_layers=num_layers,
            num_heads=num_heads, num_prefix_tokens=max_text_tokens, seq_len=max_frames,
            position_embedding="rope_1d", rope_prefix="positions", resid_dropout=dropout, ffn_dropout=dropout)
        self.frame_embedding = nn.Embedding(streams * (codebook_size + 2), hidden_size)
        nn.init.normal_(self.frame_embedding.weight, std=0.02)
        self.depth = DepthTransformer(streams, codebook_size + 1, codebook_size + 2, hidden_size,
                                      depth_hidden_size, depth_layers, depth_heads, per_step_input, dropout)
        self.mctp = nn.ModuleList(MCTPModule(hidden_size, num_heads, llama_ffn_dim(hidden_size), dropout=dropout)
                                  for _ in range(num_mctp_modules))

    @property
    def num_codebooks(self) -> int:
        """The codec codebooks the LM predicts."""
        return self.config.num_codebooks

    @property
    def num_streams(self) -> int:
        """Tokens a frame holds: the codebooks, and the text stream first if there is one."""
        return self.config.num_codebooks + int(self.config.text_stream)

    @property
    def semantic_stream(self) -> int:
        """Index of the first codebook (the semantic one, which says END) among the streams."""
        return int(self.config.text_stream)

    @property
    def max_delay(self) -> int:
        return max(self.delays)

    def embed_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """Frames as flat ids [R, n * S] (or [R, n, S]) over the S streams -> one summed embedding per frame [R, n, D]."""
        Q = self.num_streams
        frames = tokens.view(tokens.shape[0], -1, Q)
        offsets = torch.arange(Q, device=tokens.device) * (self.config.codebook_size + 2)
        return self.frame_embedding(frames + offsets).sum(dim=2)

    def check_frames(self, frames: torch.Tensor, name: str = "frames"):
        if frames.dtype not in (torch.long, torch.int, torch.int16):
            raise ValueError(f"{name} must be integer token ids, got dtype {frames.dtype}.")
        if frames.numel() and (frames.min() < 0 or frames.max() > self.start_id):
            raise ValueError(f"{name} must lie in [0, {self.start_id}] (codes, END={self.end_id}, "
                             f"START={self.start_id}), got min {int(frames.min())}, max {int(frames.max())}.")

    def _rope(self, start: int, length: int, device) -> torch.Tensor:
        table, _ = self.backbone._tables(device)
        return rope_rotation(table[start:start + length])

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor, frames: torch.Tensor,
                mctp_detach: bool = False, mctp_frames: int | None = None) -> SpeechLMOutput:
        """Teacher-forced logits for delayed frames [B, S, F] (S streams) after the prompt (ids, mask [B, max_text_tokens]).

        The hidden state after [SOA] predicts frame 0, the one after frame t predicts frame t + 1; MCTP
        module k predicts frame t + k from module k - 1's state at t and frame t + k - 1.

        mctp_detach: the MCTP losses do not reach the backbone (VITA-Audio's gradient detach).
        mctp_frames: run the depth transformer for each MCTP module at this many random frames only
            (training cost); `mctp_targets` then says which frames each module's logits are for.
        """
        hidden, embeds = self.backbone_states(text_ids, text_mask, frames)
        flat = frames.transpose(1, 2)  # [B, F, Q]
        logits = self.frame_logits(hidden, flat)
        mctp_logits, mctp_targets = [], []
        for k, h in enumerate(self.mctp_states(hidden, embeds, detach=mctp_detach), start=1):
            targets = torch.arange(k, flat.shape[1], device=flat.device)
            if mctp_frames is not None and mctp_frames < len(targets):
                pick = torch.randperm(len(targets), device=flat.device)[:mctp_frames].sort().values
                h, targets = h[:, pick], targets[pick]
            mctp_logits.append(self.frame_logits(h, flat[:, targets]))
            mctp_targets.append(targets)
        return SpeechLMOutput(logits=logits, mctp_logits=mctp_logits or None, mctp_targets=mctp_targets or None)

    def backbone_states(self, text_ids, text_mask, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the backbone's normed states [B, F, D], state t predicting frame t; the frame embeddings [B, F, D]).

        text_ids / text_mask may be shorter than max_text_tokens: a batch's common left padding can be cut
        (training cost). RoPE is relative and padding is masked, so the result is the same.
        """
        self.check_frames(frames)
        B, Q, _ = frames.shape
        if Q != self.num_streams:
            raise ValueError(f"frames have {Q} streams; this model reads {self.num_streams} "
                             f"({self.num_codebooks} codebooks{' and the text stream' * self.config.text_stream}).")
        if not 1 <= text_ids.shape[1] <= self.config.max_text_tokens or text_mask.shape != text_ids.shape:
            raise ValueError(f"text_ids and text_mask must be [B, n] with n <= {self.config.max_text_tokens}, got "
                             f"{tuple(text_ids.shape)} and {tuple(text_mask.shape)}.")
        self.backbone.check_token_ids(text_ids, "text_ids")
        if self.training and self.config.text_dropout > 0:  # CFG: some rows see the empty prompt ([SOA] only)
            drop = torch.rand(B, device=text_ids.device) < self.config.text_dropout
            text_mask = text_mask.clone()
            text_mask[drop, :-1] = False
        embeds = self.embed_frames(frames.transpose(1, 2))  # [B, F, D]
        x = torch.cat([self.backbone.token_embedding(text_ids), embeds[:, :-1]], dim=1)
        hidden = self.backbone.forward_hidden(x, prefix_mask=text_mask)
        return hidden[:, text_ids.shape[1] - 1:], embeds

    def mctp_states(self, hidden: torch.Tensor, embeds: torch.Tensor, detach: bool = False) -> list[torch.Tensor]:
        """Module k's normed states [B, F - k, D] (state t predicts frame t + k), k = 1..K."""
        if detach:
            hidden, embeds = hidden.detach(), embeds.detach()
        states, previous, num_frames = [], hidden, hidden.shape[1]
        for k, module in enumerate(self.mctp, start=1):
            length = num_frames - k
            if length < 1:
                break
            rope = self._rope(self.config.max_text_tokens - 1, length, hidden.device)
            previous = module(embeds[:, k - 1:num_frames - 1], previous[:, :length], rope, is_causal=True)
            states.append(self.backbone.norm(previous))
        return states

    def frame_logits(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The depth transformer, teacher-forced: states [..., D] and their frames' tokens [..., Q] ->
        logits [..., Q, V + 1]."""
        lead = hidden.shape[:-1]
        return self.depth(hidden.reshape(-1, hidden.shape[-1]), tokens.reshape(-1, tokens.shape[-1])).unflatten(0, lead)


def add_text_stream(lm: SpeechLM, text_lead: int = 6, text_pad_id: int = 0) -> SpeechLM:
    """A text-stream SpeechLM (DSM-TTS) that starts from a trained prefix-only one.

    Everything the prefix model learnt carries over: the backbone, the MCTP modules, and each codebook's
    frame embedding, depth input projection, depth token embedding and depth head (they move up one
    stream, behind the new text stream 0). The text stream's own weights are fresh. The depth
    transformer's shared layers number the steps with RoPE, which is relative, so shifting every codebook
    by one step keeps what they compute between codebooks. Warm-starting saves the training a fresh
    model spends on learning the codec's codes (zoo's own choice; Kyutai train DSM-TTS from scratch).
    """
    if not isinstance(lm, SpeechLM):
        raise TypeError(f"add_text_stream needs a SpeechLM, got {type(lm).__name__}.")
    if lm.config.text_stream:
        raise ValueError("this SpeechLM already has a text stream; go on training it as it is.")
    if list(lm.config.delays or moshi_delays(lm.num_codebooks)) != moshi_delays(lm.num_codebooks):
        raise ValueError(f"add_text_stream expects Moshi's default delays, the model has {lm.config.delays}.")
    config = {**dict(lm.config), "delays": None, "text_stream": True, "text_lead": text_lead,
              "text_pad_id": text_pad_id}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    new = SpeechLM(**config).to(lm.device)
    old_state, state = lm.state_dict(), new.state_dict()
    block = lm.config.codebook_size + 2  # ids per stream in the summed frame embedding and the depth inputs
    outputs = lm.depth.num_outputs
    shifted = {  # parameter -> the row of the new one where the old one's rows start (one stream further)
        "frame_embedding.weight": block,
        "depth.body.token_embedding.weight": block,
        "depth.body.head.weight": outputs,
    }
    with torch.no_grad():
        for name, old in old_state.items():
            if name in shifted:
                offset = shifted[name]
                state[name][offset:offset + old.shape[0]] = old
            elif name.startswith("depth.in_proj.") and lm.config.per_step_input:
                k = int(name.split(".")[2])
                state[name.replace(f"in_proj.{k}.", f"in_proj.{k + 1}.")].copy_(old)
            else:
                state[name].copy_(old)
    new.load_state_dict(state)
    return new


def speech_lm_loss(logits: torch.Tensor, frames: torch.Tensor, num_valid: torch.Tensor, start_id: int,
                   targets: torch.Tensor | None = None, codebook: int | None = None) -> torch.Tensor:
    """Cross-entropy of logits [B, n, Q, V + 1] for the frames `targets` [n] (default 0..n-1) of frames
    [B, Q, F], over the real slots: frames before each row's `num_valid` [B] (audio, END and the delayed
    tail), START slots left out. codebook: that codebook's loss only."""
    B, n, Q, _ = logits.shape
    targets = torch.arange(n, device=frames.device) if targets is None else targets
    labels = frames[:, :, targets].transpose(1, 2)  # [B, n, Q]
    valid = (targets[None, :, None] < num_valid[:, None, None]) & (labels != start_id)
    if codebook is not None:
        valid = valid & (torch.arange(Q, device=frames.device) == codebook)
    return F.cross_entropy(logits[valid], labels[valid])


# ----------------------------------------------------------------------------- the engine step
class FrameStep:
    """A step of the shared decode loop that emits whole frames: the backbone's last hidden state goes
    through the depth transformer (Q tokens); with an MCTP schedule some steps then run MCTP modules for
    more frames, and the backbone reads all of a step's frames in its next pass.

    scripts: with a text-stream model, each row's text as the ids the text stream reads (one list per row):
    that stream may then only take [PAD] or the row's next character, and END waits for the last one.
    compile: run the depth transformer's steps through torch.compile (`DepthTransformer.sample`); pass
    compile=True to the engine as well for the backbone's.
    """

    def __init__(self, model: SpeechLM, mctp_schedule: list[int] | str | None = None, scripts: list | None = None,
                 compile: bool = False):
        self.model, self.compile = model, compile
        self.vocab_size = model.config.codebook_size + 1  # what the engine samples from (codes and END)
        self.mctp_schedule = mctp_schedule
        if mctp_schedule is not None:
            mctp_plan(mctp_schedule, 1, len(model.mctp))  # validate early
        if model.config.text_stream != (scripts is not None):
            raise ValueError("a text-stream SpeechLM needs the scripts (the text as ids, one list per row), and only "
                             "such a model takes them.")
        if scripts is not None:
            self.script_lengths = torch.tensor([len(ids) for ids in scripts])
            width = max(int(self.script_lengths.max()), 1) + 1  # one [PAD] after the longest: "nothing left"
            self.scripts = torch.full((len(scripts), width), model.config.text_pad_id, dtype=torch.long)
            for row, ids in enumerate(scripts):
                self.scripts[row, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        self.reset(num_tokens=0, num_given=0, batch_size=0)

    def reset(self, num_tokens: int, num_given: int, batch_size: int):
        """Called by the engine before decoding: forget the previous generation."""
        Q = self.model.num_streams
        for name, value in (("num_tokens", num_tokens), ("num_given", num_given)):
            if value % Q:
                raise ValueError(f"{name}={value} is not a whole number of {Q}-token frames.")
        self.frame = num_given // Q  # frames known so far (given or emitted)
        self.plan = mctp_plan(self.mctp_schedule, (num_tokens - num_given) // Q, len(self.model.mctp))
        self.steps_done = 0
        self.ended = torch.zeros(batch_size, dtype=torch.bool)
        self.said = torch.zeros(batch_size, dtype=torch.long)  # characters of the script the text stream has emitted
        if self.model.config.text_stream and batch_size and batch_size != len(self.scripts):
            raise ValueError(f"{len(self.scripts)} scripts for a batch of {batch_size}; pass one per row.")
        self._mctp_ready, self._embedded = False, 0

    def num_steps(self, num_tokens: int) -> int:
        S = self.model.num_streams
        if num_tokens % S:
            raise ValueError(f"{num_tokens} tokens are not whole frames of {S} streams.")
        return len(mctp_plan(self.mctp_schedule, num_tokens // S, len(self.model.mctp)))

    def positions(self, num_prefix: int, num_tokens: int) -> int:
        """Positions the sequence occupies: the prefix and one per frame."""
        return num_prefix + num_tokens // self.model.num_streams

    def cache_length(self, num_prefix: int, num_tokens: int) -> int:
        if self.compile:  # one cache size, the whole context: a compiled step would recompile for each length
            return self.model.backbone.max_positions
        return self.positions(num_prefix, num_tokens) - 1

    def check_tokens(self, ids: torch.Tensor, name: str = "prompt_tokens"):
        self.model.check_frames(ids, name)

    @property
    def _uses_mctp(self) -> bool:
        return bool(self.model.mctp) and self.mctp_schedule is not None

    def embed(self, backbone, tokens: torch.Tensor) -> torch.Tensor:
        """Frames [R, n * Q] -> the backbone's next inputs [R, n, D] (kept for the MCTP modules too)."""
        embeds = self.model.embed_frames(tokens)
        if self._uses_mctp:
            self._setup_mctp(embeds)
            self.frame_embeds[:, self._embedded:self._embedded + embeds.shape[1]] = embeds
            self._embedded += embeds.shape[1]
        return embeds

    def sample(self, backbone, hidden: torch.Tensor, sample_fn) -> torch.Tensor:
        """hidden [R, n, D] of the backbone's newest positions -> this step's frames [B, frames * Q]."""
        if self._uses_mctp:
            self._store_backbone(hidden)
        frames = [self._sample_frame(hidden[:, -1], sample_fn)]
        for k in range(1, self.plan[self.steps_done]):
            state = self._mctp_forward(k)  # [R, n, D], the newest position last
            frames.append(self._sample_frame(self.model.backbone.norm(state[:, -1]), sample_fn))
        self.steps_done += 1
        return torch.cat(frames, dim=1)

    def _sample_frame(self, hidden: torch.Tensor, sample_fn) -> torch.Tensor:
        """One frame through the depth transformer: [R, D] -> tokens [B, S] (START / END forced where due, the
        text stream held to its script)."""
        R, B = hidden.shape[0], len(self.ended)
        frame, model, semantic = self.frame, self.model, self.model.semantic_stream
        ended = self.ended = self.ended.to(hidden.device)
        tokens_out = []  # the frame's tokens as the model reads them back

        def choose(k: int, logits: torch.Tensor) -> torch.Tensor:
            if k < semantic:
                return self._choose_text(logits, sample_fn, R // B, tokens_out)
            if k > semantic:  # only the semantic stream ends speech
                logits = logits.clone()
                logits[..., model.end_id] = NEG
            elif model.config.text_stream:  # ... and only once the script is out
                logits = logits.clone()
                done = self._script_done().repeat(R // B)[:, None]  # [R, 1]
                logits[..., model.end_id] = torch.where(done, logits[..., model.end_id], NEG)
            token = sample_fn(logits)  # [B, 1]
            if model.delays[k] > frame:
                token = torch.full_like(token, model.start_id)
            elif k == semantic:
                token = torch.where(ended[:, None], model.end_id, token)
            tokens_out.append(token)
            return torch.cat([token] * (R // B))

        # the streams after the last one due by this frame are START: the depth transformer stops before them
        # (with a text stream's lead, most of each early frame's steps; Moshi's delays: frame 0's acoustic ones)
        due = [k for k, delay in enumerate(model.delays) if delay <= frame]
        live = due[-1] + 1 if due else 0
        self.model.depth.sample(hidden, choose, compile=self.compile, num_steps=live)
        if live < model.num_streams:
            tokens_out.append(sample_fn(None, forced=torch.full((B, model.num_streams - live), model.start_id,
                                                                dtype=torch.long, device=hidden.device)))
        tokens = torch.cat(tokens_out, dim=1)
        if model.delays[semantic] <= frame:
            self.ended = ended | (tokens[:, semantic] == model.end_id)
        if self._uses_mctp:
            self._store_frame(tokens)
        self.frame += 1
        return tokens

    def _script_done(self) -> torch.Tensor:
        """[B] bool: every character of the row's script is out (text-stream models)."""
        return self.said.to(self.ended.device) >= self.script_lengths.to(self.ended.device)

    def _choose_text(self, logits: torch.Tensor, sample_fn, copies: int, tokens_out: list) -> torch.Tensor:
        """The text stream's token: [PAD], or the row's next character with the probability the model gives to
        any character (Kyutai's TTS samples "a new word starts" the same way and feeds the word itself): the
        model decides when to move on, the script decides what comes. Scoring the next character alone made a
        model that was unsure which letter follows wait on [PAD] and never catch up (measured: the text
        stream stalled after a few words and the speech ran to the frame budget)."""
        pad = self.model.config.text_pad_id
        scripts, said = self.scripts.to(logits.device), self.said.to(logits.device)
        upcoming = scripts.gather(1, said[:, None]).repeat(copies, 1)  # [R, 1]; [PAD] once the script is out
        characters = logits[..., :self.model.config.text_vocab_size].clone()
        characters[..., pad] = NEG
        allowed = torch.full_like(logits, NEG)
        allowed[..., pad] = logits[..., pad]
        allowed.scatter_(-1, upcoming[:, None], characters.logsumexp(-1, keepdim=True))
        token = sample_fn(allowed)  # [B, 1]
        token = torch.where(self.ended.to(token.device)[:, None], pad, token)
        if self.model.delays[0] > self.frame:
            token = torch.full_like(token, self.model.start_id)
        self.said = said + ((token[:, 0] != pad) & (token[:, 0] == upcoming[:len(token), 0])).long()
        tokens_out.append(token)
        return token.repeat(copies, 1)

    # ------------------------------------------------------------------ MCTP state
    # t indexes the frame a hidden state predicts: the backbone's state after [SOA] is t = 0. Per module k
    # the buffers hold h^k_t; `filled[k]` counts the positions in module k's KV cache.
    def _setup_mctp(self, like: torch.Tensor):
        """Buffers and KV caches for `like.shape[0]` rows, once per generation."""
        if self._mctp_ready:
            return
        model = self.model
        R, D, length = like.shape[0], like.shape[-1], model.config.max_frames
        options = dict(dtype=like.dtype, device=like.device)
        self.states = torch.zeros(len(model.mctp) + 1, R, length, D, **options)
        self.frame_embeds = torch.zeros(R, length, D, **options)
        self.filled = [0] * (len(model.mctp) + 1)
        for module in model.mctp:
            attn = module.block.attn
            attn.kv_cache = KVCache(R, attn.num_kv_heads, length, attn.head_dim, **options)
        self._mctp_ready = True

    def _store_backbone(self, hidden: torch.Tensor):
        """Keep the backbone's states h^0_t of the positions it just read (t <= the frames known)."""
        self._setup_mctp(hidden)
        t_last = self.frame  # the newest state predicts the next frame
        n = min(hidden.shape[1], t_last + 1 - self.filled[0])
        self.states[0, :, t_last + 1 - n:t_last + 1] = hidden[:, -n:]
        self.filled[0] = t_last + 1

    def _store_frame(self, tokens: torch.Tensor):
        R = self.states.shape[1]
        self.frame_embeds[:, self.frame] = self.model.embed_frames(torch.cat([tokens] * (R // len(tokens))))[:, 0]

    def _mctp_forward(self, k: int) -> torch.Tensor:
        """Module k over the positions it has not read yet, up to the chain's -> its states there [R, n, D]."""
        model = self.model
        start, end = self.filled[k], self.frame - k + 1  # the chain started from the backbone's state at frame - k
        if self.filled[k - 1] < end:
            raise RuntimeError("MCTP modules must run in order (module k - 1 before module k).")
        device, dtype = self.states.device, self.states.dtype
        positions = torch.arange(start, end, device=device)
        allowed = torch.arange(end, device=device)[None, :] <= positions[:, None]
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, NEG)
        rope = model._rope(model.config.max_text_tokens - 1 + start, end - start, device)
        out = model.mctp[k - 1](self.frame_embeds[:, start + k - 1:end + k - 1], self.states[k - 1, :, start:end],
                                rope, bias[None, None], positions, kv_len=end)
        self.states[k, :, start:end] = out
        self.filled[k] = end
        return out
