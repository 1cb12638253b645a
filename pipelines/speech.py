"""Speech generation on codec tokens: `CodecTTSPipeline` (text to speech) and
`SpeechContinuationPipeline` (continue a speaker's audio).

The text (characters, left-padded, ending in [SOA]) is the prefix of a `SpeechLM`; the shared engine
then emits delayed multi-codebook frames (`FrameStep`: the depth transformer, optionally MCTP modules)
until the semantic stream says END; the undelayed codes go to the `SpeechCodec`'s decoder. A model with an
aligned text stream (DSM-TTS, `SpeechLM(text_stream=True)`) also walks through the text's characters as it
speaks them; the script it may emit is the prompt text. With
`stream=True` the call returns a generator of audio chunks, each decoded by the codec's streaming
decoder as soon as its frames exist: the same samples as the offline call for the same seed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput, logging

from tokenizers_audio import SpeechCodec
from zoo.ar.speech import FrameStep, SpeechLM, delay_codes, undelay_codes
from zoo.audio import prepare
from zoo.data.speech import ALPHABET, phonemize
from zoo.data.text import SOA, encode_prompts, token_ids

from .base import ZooPipeline

logger = logging.get_logger(__name__)
IGNORED_PUNCTUATION = ".,;:!?\""  # dropped from the text (the training transcripts have none)
TEXT_INPUTS = ("characters", "phonemes")  # what the LM reads: the letters, or espeak-ng's IPA of them
TEMPERATURE, TOP_K = 0.8, 250  # default token sampling: Moshi's LMGen for audio tokens (temp, top_k)


@dataclass
class SpeechPipelineOutput(BaseOutput):
    """audios: one waveform per row (float32 numpy [T] or torch [T] with output_type="pt") at `sample_rate`;
    codes: the codec codes [Q, frames] each was decoded from.

    Examples:
        >>> import numpy as np
        >>> out = SpeechPipelineOutput(audios=[np.zeros(24_000, np.float32)], sample_rate=24_000, codes=[None])
        >>> out._repr_html_().count("<audio")    # a notebook shows one player per waveform
        1
    """

    audios: list
    sample_rate: int
    codes: list

    def _repr_html_(self) -> str:  # an audio player per waveform in notebooks
        from zoo.display import audio_html

        return audio_html(self.audios, self.sample_rate)


def normalize_text(text, alphabet: str = ALPHABET) -> str:
    """Lower-case, punctuation dropped, hyphens and runs of whitespace as one space; raises ValueError for
    text that is not a string, is empty, or holds characters the model cannot say (e.g. digits)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {type(text).__name__}.")
    cleaned = text.lower().replace("-", " ")
    cleaned = "".join(c for c in cleaned if c not in IGNORED_PUNCTUATION)
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    unsupported = sorted(set(cleaned) - set(alphabet))
    if unsupported:
        raise ValueError(f"the text {text!r} holds characters this model cannot say: {unsupported}; it reads "
                         f"{alphabet!r} (spell numbers and symbols out as words).")
    if not cleaned:
        raise ValueError(f"the text {text!r} is empty; pass something to say.")
    return cleaned


class _SpeechLMPipeline(ZooPipeline):
    """What the speech pipelines share: components, prompts, the frame loop and decoding."""

    model_cpu_offload_seq = "lm->codec"

    def __init__(self, lm: SpeechLM, tokenizer, codec: SpeechCodec, text_input: str = "characters"):
        super().__init__()
        self.check_choice("text_input", text_input, TEXT_INPUTS)
        if lm.config.codebook_size != codec.config.codebook_size:
            raise ValueError(f"the LM's codebooks have {lm.config.codebook_size} codes; the codec's have "
                             f"{codec.config.codebook_size}.")
        if lm.config.num_codebooks > codec.config.num_codebooks:
            raise ValueError(f"the LM reads {lm.config.num_codebooks} codebooks; the codec has "
                             f"{codec.config.num_codebooks}.")
        if lm.config.text_stream and text_input != "characters":
            raise ValueError("an LM with an aligned text stream reads characters (its alignment is of the letters); "
                             f"got text_input={text_input!r}.")
        if len(tokenizer) > lm.config.text_vocab_size:
            raise ValueError(f"the text tokenizer has {len(tokenizer)} tokens; the LM reads {lm.config.text_vocab_size}.")
        self.register_modules(lm=lm, tokenizer=tokenizer, codec=codec)
        self.register_to_config(text_input=text_input)

    @property
    def sample_rate(self) -> int:
        return self.codec.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.codec.config.frame_rate

    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised texts (`normalize_text`, or "" for the unconditional row) -> prompt ids and mask; a model
        trained on phonemes (`text_input="phonemes"`) reads espeak-ng's IPA of the texts."""
        if self.config.text_input == "phonemes":
            texts = phonemize(texts)
        return encode_prompts(self.tokenizer, texts, self.lm.config.max_text_tokens, end_token=SOA)

    def frame_budget(self, max_seconds, prompt_frames: int = 0) -> int:
        """Frames the engine may run: the prompt, the audio up to max_seconds, END and the delays."""
        limit = self.lm.config.max_frames
        if max_seconds is None:
            return limit
        if not isinstance(max_seconds, (int, float)) or max_seconds <= 0:
            raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}.")
        return min(limit, prompt_frames + int(np.ceil(max_seconds * self.frame_rate)) + 1 + self.lm.max_delay)

    def text_stream_scripts(self, texts: list[str]) -> list[list[int]] | None:
        """What a text-stream LM's text stream may say, per row: the normalised text's character ids
        (None for an LM without a text stream)."""
        if not self.lm.config.text_stream:
            return None
        return [token_ids(self.tokenizer, text) for text in texts]

    def generate_codes(self, text_ids, text_mask, num_frames: int, prompt_frames=None, guidance_scale: float = 1.0,
                       temperature: float = TEMPERATURE, top_k: int = TOP_K, top_p: float = 1.0, generator=None,
                       mctp_schedule=None, callback_on_step_end=None, scripts=None, compile: bool = False):
        """The frame loop, as a generator: after every engine step yields (codes [B, Q, t], lengths), the
        undelayed codec codes complete so far and each row's audio length in frames (None until its END).
        Stops once every row has ended and its delayed tail is complete, or at `num_frames`. scripts: the
        text stream's characters per row (`text_stream_scripts`), for an LM with a text stream. compile: the
        backbone's and the depth transformer's decode steps through torch.compile."""
        lm, device = self.lm, self._execution_device
        Q, D, B, semantic = lm.num_streams, lm.max_delay, len(text_ids), lm.semantic_stream
        kwargs = dict(prefix_ids=text_ids.to(device), prefix_mask=text_mask.to(device), temperature=temperature,
                      top_k=top_k, top_p=top_p, generator=generator, compile=compile)
        if guidance_scale != 1:
            empty_ids, empty_mask = self.encode_text([""] * B)
            kwargs.update(uncond_prefix_ids=empty_ids.to(device), uncond_prefix_mask=empty_mask.to(device),
                          guidance_scale=guidance_scale)
        if prompt_frames is not None:
            kwargs["prompt_tokens"] = prompt_frames.transpose(1, 2).flatten(1).to(device)
        delay = lm.delays[semantic]
        lengths, searched = [None] * B, delay  # END is searched for in the frames not yet searched
        steps = self.generate_token_steps(num_frames * Q, callback_on_step_end, model=lm.backbone,
                                          step=FrameStep(lm, mctp_schedule, scripts, compile), **kwargs)
        for out in steps:
            n = out.tokens.shape[1] // Q
            frames = out.tokens.view(B, n, Q).transpose(1, 2)  # [B, Q, n] delayed
            for row in range(B):
                if lengths[row] is None:
                    ends = (frames[row, semantic, searched:] == lm.end_id).nonzero()
                    lengths[row] = searched - delay + int(ends[0]) if len(ends) else None
            searched = max(n, delay)
            codes = undelay_codes(frames, lm.delays) if n > D else frames[:, :, :0]
            yield codes[:, semantic:], lengths
            if all(length is not None and n >= length + D for length in lengths):
                steps.close()  # closes the progress bar too
                break
        if any(length is None for length in lengths):
            logger.warning(f"speech reached the frame budget ({num_frames} frames) before its end; it is cut there. "
                           "Raise max_seconds or shorten the text.")

    def decode_rows(self, codes: torch.Tensor, lengths, output_type: str, return_dict: bool, skip: int = 0):
        """Final codes [B, Q, t] and lengths -> a SpeechPipelineOutput (frames before `skip` not returned)."""
        audios, kept = [], []
        for row, length in enumerate(lengths):
            length = codes.shape[2] if length is None else min(length, codes.shape[2])
            row_codes = codes[row:row + 1, :, :length]
            audio = self.codec.decode(row_codes)[0, 0] if length else torch.zeros(0)
            audio = audio[skip * self.codec.frame_size:].float().cpu()
            audios.append(audio if output_type == "pt" else audio.numpy())
            kept.append(row_codes[0].cpu())
        self.maybe_free_model_hooks()
        output = SpeechPipelineOutput(audios=audios, sample_rate=self.sample_rate, codes=kept)
        return output if return_dict else (audios,)

    def stream_rows(self, loop, chunk_frames: int, output_type: str, skip: int = 0):
        """A generator of audio chunks for one row: the codec's streaming decoder on the frames as they come
        (chunks of `chunk_frames` frames, then the rest at the end; frames before `skip` are decoded, not returned)."""
        state, decoded, available, codes = None, 0, 0, None

        def decode_new():
            nonlocal state, decoded
            audio, state = self.codec.decode_step(codes[:, :, decoded:available], state)
            chunk = audio[0, 0, max(0, skip - decoded) * self.codec.frame_size:].float().cpu()
            decoded = available
            return chunk if output_type == "pt" else chunk.numpy()

        for codes, lengths in loop:
            available = codes.shape[2] if lengths[0] is None else min(codes.shape[2], lengths[0])
            ended = lengths[0] is not None
            if available - decoded >= chunk_frames or (ended and available > decoded):
                chunk = decode_new()
                if len(chunk):
                    yield chunk
        if available > decoded:  # the budget ran out between chunks
            yield decode_new()
        self.maybe_free_model_hooks()

    def check_call_args(self, guidance_scale, output_type, chunk_frames, compile=False):
        self.check_choice("output_type", output_type, ("np", "pt"))
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be True or False, got {compile!r}.")
        if not isinstance(guidance_scale, (int, float)) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a number >= 0 (1 = off), got {guidance_scale!r}.")
        if not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}.")


class CodecTTSPipeline(_SpeechLMPipeline):
    """Text to speech on codec tokens.

    >>> pipe = zoo.load("tts-speech")                                               # doctest: +SKIP
    >>> out = pipe("the small dog ran to the old house", generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
    >>> zoo.audio.write_wav("speech.wav", torch.from_numpy(out.audios[0]), out.sample_rate)       # doctest: +SKIP
    >>> for chunk in pipe("hello there", stream=True): ...                          # doctest: +SKIP
    """

    _callback_tensor_inputs = ["tokens"]

    @torch.no_grad()
    def __call__(self, text: str | list[str], guidance_scale: float = 1.0, temperature: float = TEMPERATURE,
                 top_k: int = TOP_K, top_p: float = 1.0, max_seconds: float | None = None, mctp_schedule=None,
                 generator: torch.Generator | list[torch.Generator] | None = None, stream: bool = False,
                 chunk_frames: int = 2, output_type: str = "np", return_dict: bool = True, callback_on_step_end=None,
                 compile: bool = False):
        """Say `text`.

        Args:
            text: a sentence or a list of them (letters, spaces and apostrophes; punctuation is dropped).
            guidance_scale: CFG scale >= 0 against the empty text (1 = off).
            temperature, top_k, top_p: token sampling (temperature 0 = greedy). The defaults are Moshi's for
                audio tokens (`LMGen`: temp 0.8, top_k 250); temperature=1.0, top_k=0 samples the model's whole
                distribution, which says fewer of the words (BENCHMARKS.md, "An aligned text stream").
            max_seconds: the longest audio to generate (default: the model's context).
            mctp_schedule: None (the backbone emits every frame), a VITA-Audio mode ("turbo", "boost",
                "balance", "vanilla") or a list [backbone frames, MCTP frames, ...] (needs MCTP modules).
            generator: a torch.Generator, or a list with one per text.
            stream: return a generator of audio chunks (one text only) instead of the whole waveform.
            chunk_frames: codec frames per streamed chunk (the first chunk comes as soon as they exist).
            output_type: "np" (float32 numpy) or "pt" (torch).
            compile: run the backbone's and the depth transformer's decode steps through torch.compile (CUDA
                graphs on GPU). The first call compiles (about 20 s per model on a 2-core CPU; with an MCTP
                schedule the backbone compiles once more for its multi-frame steps); later calls reuse it.
        Returns:
            `SpeechPipelineOutput` (audios, sample_rate, codes), or a generator of chunks with stream=True.
        """
        self.check_call_args(guidance_scale, output_type, chunk_frames, compile)
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, (list, tuple)) or not texts:
            raise ValueError(f"text must be a string or a non-empty list of strings, got {text!r}.")
        texts = [normalize_text(t) for t in texts]
        ids, mask = self.encode_text(texts)
        loop = self.generate_codes(ids, mask, self.frame_budget(max_seconds), guidance_scale=guidance_scale,
                                   temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                                   mctp_schedule=mctp_schedule, callback_on_step_end=callback_on_step_end,
                                   scripts=self.text_stream_scripts(texts), compile=compile)
        if stream:
            if len(texts) != 1:
                raise ValueError(f"stream=True speaks one text at a time; got {len(texts)}.")
            return self.stream_rows(loop, chunk_frames, output_type)
        for codes, lengths in loop:
            pass
        return self.decode_rows(codes, lengths, output_type, return_dict)


class SpeechContinuationPipeline(_SpeechLMPipeline):
    """Continue a speaker's audio: the prompt's codes are given frames, the LM goes on from there.

    >>> pipe = SpeechContinuationPipeline.from_pretrained("tts-speech-prefix")       # doctest: +SKIP
    >>> out = pipe(wav, sample_rate=24000, text="the cat sat on the mat and then it ran away")  # doctest: +SKIP
    """

    _callback_tensor_inputs = ["tokens"]

    @torch.no_grad()
    def __call__(self, audio, sample_rate: int | None = None, text: str | None = None, resample: bool = False,
                 guidance_scale: float = 1.0, temperature: float = TEMPERATURE, top_k: int = TOP_K, top_p: float = 1.0,
                 max_seconds: float | None = None, mctp_schedule=None, generator=None, stream: bool = False,
                 chunk_frames: int = 2, output_type: str = "np", return_dict: bool = True,
                 callback_on_step_end=None, compile: bool = False):
        """Continue `audio` ([T], [1, T] or [B, 1, T] at `sample_rate` Hz).

        Args:
            text: optional transcript of the prompt followed by what to say next; without it the model
                continues unconditionally (then guidance does nothing).
            resample: convert other rates to the codec's (otherwise they raise).
            Other arguments as `CodecTTSPipeline`. The output is the continuation after the prompt.
        """
        self.check_call_args(guidance_scale, output_type, chunk_frames, compile)
        audio = prepare(audio, sample_rate, self.sample_rate, resample, name="the audio prompt")
        lm = self.lm
        if lm.config.text_stream:
            raise ValueError("this LM reads an aligned text stream, which an audio prompt does not come with; continue "
                             "audio with an LM trained without --text-stream.")
        codes = self.codec.encode(audio, self.sample_rate, num_codebooks=lm.num_codebooks)  # [B, Q, Tp]
        num_given = codes.shape[2]
        if num_given + lm.max_delay + 2 > lm.config.max_frames:
            raise ValueError(f"the audio prompt is {num_given} frames; this model's context holds "
                             f"{lm.config.max_frames} frames. Pass a shorter prompt.")
        prompt_frames = delay_codes(codes, lm.delays, lm.start_id, lm.end_id)[:, :, :num_given]
        B = codes.shape[0]
        ids, mask = self.encode_text([normalize_text(text) if text else ""] * B)
        if not text:
            guidance_scale = 1.0  # the condition is the empty text: nothing to guide against
        loop = self.generate_codes(ids, mask, self.frame_budget(max_seconds, num_given), prompt_frames=prompt_frames,
                                   guidance_scale=guidance_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                                   generator=generator, mctp_schedule=mctp_schedule,
                                   callback_on_step_end=callback_on_step_end, compile=compile)
        if stream:
            if B != 1:
                raise ValueError(f"stream=True continues one prompt at a time; got {B}.")
            return self.stream_rows(loop, chunk_frames, output_type, skip=num_given)
        for out_codes, lengths in loop:
            pass
        return self.decode_rows(out_codes, lengths, output_type, return_dict, skip=num_given)
