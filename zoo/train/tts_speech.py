"""Train a text-to-speech LM (`SpeechLM`) on the codes of a speech codec, and export a CodecTTSPipeline.

    zoo train tts-speech --out runs/tts-speech --codec codec-speech --steps 3000

The codec (a built-in name or a folder) encodes the training utterances once; the codes are cached in
`--out/codes-<split>-<n>.safetensors`. The LM reads the transcript (characters) and learns the delayed
frames of the first `--codebooks` codebooks, END after the last frame. `--mctp-modules K` adds
VITA-Audio's MCTP modules: they read detached backbone states (VITA-Audio's gradient detach, so the
backbone is the one plain decoding uses), and their depth-transformer loss runs at `--mctp-frames`
random frames per batch to bound the cost on a CPU. Batches hold utterances of similar length, which
halves the padding of random batches (`--no-group-by-length`: at random, as versions 1-2 of the built-in
were trained). The pipeline is written to `--out/pipeline`.

`--text-stream` trains Kyutai's delayed-streams TTS (DSM-TTS) on zoo's LM: the recogniser `--aligner`
(CTC forced alignment) finds where each character of each transcript starts, once (cached in
`--out/alignments-train-<n>.safetensors`, and the probe's validation utterances likewise); the LM
reads and predicts the characters at those frames in a text stream that runs `--text-lead` frames
ahead of the audio, next to the usual text prefix. With `--init` a trained prefix-only LM gains the
text stream (`zoo.ar.speech.add_text_stream`) and keeps what it learnt of the codes.

At every checkpoint the text-reliance probe (train.log) reads `--probe-utterances` training utterances
and as many from the validation split (encoded once, `--out/codes-validation-<n>.safetensors`): a gap
between the two is overfitting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from zoo.ar.speech import SpeechLM, add_text_stream, aligned_text_stream, delay_codes, speech_lm_loss
from zoo.data.speech import PHONEMES, SpeechDataset, phonemize
from zoo.data.text import SOA, character_tokenizer, encode_prompts, token_ids
from zoo.train.loop import add_group_by_length, add_mixed_precision, cosine_config, load_to_continue, train


class SpeechCodes(torch.utils.data.Dataset):
    """Utterances as (transcript, codec codes [Q, T]); encoded once with `codec` and cached at `path`."""

    def __init__(self, codec, data: SpeechDataset, num_codebooks: int, path: str | Path, progress: bool = True):
        self.path = Path(path)
        expected = {"utterances": str(len(data)), "num_codebooks": str(num_codebooks),
                    "codec": json.dumps({k: v for k, v in codec.config.items() if not k.startswith("_")},
                                        sort_keys=True)}
        if not self._load(expected):
            self._build(codec, data, num_codebooks, expected, progress)
            self._load(expected)

    def _load(self, expected: dict) -> bool:
        from safetensors import safe_open

        if not self.path.is_file():
            return False
        with safe_open(self.path, "pt") as f:
            metadata = f.metadata()
            if any(metadata.get(k) != v for k, v in expected.items()):
                raise ValueError(f"{self.path} holds codes of another codec or data set; delete it or pick "
                                 "another --out.")
            self.codes, self.offsets = f.get_tensor("codes"), f.get_tensor("offsets")
            self.texts = json.loads(metadata["texts"])
        return True

    def _build(self, codec, data, num_codebooks, metadata, progress):
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        from zoo.utils.io import atomic_path

        codes = [codec.encode(data.audio(i), codec.config.sample_rate, num_codebooks=num_codebooks)[0].short()
                 for i in tqdm(range(len(data)), desc="encoding with the codec", disable=not progress)]
        offsets = torch.tensor([0] + [c.shape[1] for c in codes]).cumsum(0)
        texts = [data.specs[i].text for i in range(len(data))]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            save_file({"codes": torch.cat(codes, dim=1), "offsets": offsets}, tmp,
                      metadata={**metadata, "texts": json.dumps(texts)})

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        item = {"text": self.texts[index], "codes": self.codes[:, self.offsets[index]:self.offsets[index + 1]].long()}
        if self.char_starts is not None:
            item["char_starts"] = self.char_starts[index]
        return item

    char_starts = None  # per utterance, where each character starts (seconds), once `align` has run

    def align(self, recognizer, data: SpeechDataset, path: str | Path, batch_size: int = 16, progress: bool = True):
        """Where each transcript's characters start (`SpeechRecognizer.align`), computed once and cached at `path`."""
        from safetensors import safe_open
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        from zoo.utils.io import atomic_path

        path = Path(path)
        expected = {"texts": json.dumps(self.texts), "recognizer": json.dumps(
            {k: v for k, v in recognizer.config.items() if not k.startswith("_")}, sort_keys=True)}
        if not path.is_file():
            order = self.offsets.diff().argsort().tolist()  # batches of similar lengths (frames of codes)
            starts = [None] * len(data)
            for first in tqdm(range(0, len(order), batch_size), desc="aligning the transcripts", disable=not progress):
                rows = order[first:first + batch_size]
                audios = [data.audio(i) for i in rows]
                batch = torch.nn.utils.rnn.pad_sequence(audios, batch_first=True)[:, None]
                found = recognizer.align(batch, [self.texts[i] for i in rows], recognizer.config.sample_rate,
                                         lengths=[len(a) for a in audios])
                for i, row_starts in zip(rows, found):
                    starts[i] = row_starts
            offsets = torch.tensor([0] + [len(t) for t in starts]).cumsum(0)
            with atomic_path(path) as tmp:
                save_file({"starts": torch.cat(starts), "offsets": offsets}, tmp, metadata=expected)
        with safe_open(path, "pt") as f:
            if any(f.metadata().get(k) != v for k, v in expected.items()):
                raise ValueError(f"{path} holds alignments of other transcripts or by another recogniser; delete it.")
            flat, offsets = f.get_tensor("starts"), f.get_tensor("offsets")
        self.char_starts = [flat[offsets[i]:offsets[i + 1]] for i in range(len(self.texts))]


def make_collate(lm: SpeechLM, tokenizer, text_map: dict[str, str] | None = None, frame_rate: float | None = None):
    """Items -> a batch: prompts (ids, mask; left-padded to the batch's longest), delayed frames [B, S, F]
    (codes, END, padding; with a text stream its characters first) and num_valid [B]. `text_map` replaces
    each transcript (e.g. by its phonemes). A text-stream LM needs items with "char_starts" (seconds) and
    the codec's `frame_rate`."""
    end, start = lm.end_id, lm.start_id
    if lm.config.text_stream and frame_rate is None:
        raise ValueError("a text-stream LM's batches need the codec's frame_rate to place the characters.")

    def text_stream(item, num_frames: int) -> torch.Tensor:
        ids = token_ids(tokenizer, item["text"])
        frames = (item["char_starts"] * frame_rate).floor().long().tolist()
        return aligned_text_stream(ids, frames, num_frames, lm.config.text_pad_id)

    def collate(items):
        texts = [item["text"] if text_map is None or not item["text"] else text_map[item["text"]] for item in items]
        ids, mask = encode_prompts(tokenizer, texts, lm.config.max_text_tokens, end_token=SOA)
        first = int(mask.any(0).nonzero()[0])  # the batch's common left padding is cut (see SpeechLM.backbone_states)
        ids, mask = ids[:, first:], mask[:, first:]
        rows = []
        for item in items:
            codes = item["codes"][None]
            codes = torch.cat([codes, torch.full_like(codes[..., :1], end)], dim=2)  # END after the last frame
            if not lm.config.text_stream:
                rows.append(delay_codes(codes, lm.delays, start, end)[0])
                continue
            audio = delay_codes(codes, lm.delays[1:], start, end)[0]
            rows.append(torch.cat([text_stream(item, audio.shape[1])[None], audio]))
        lengths = torch.tensor([r.shape[1] for r in rows])
        if lengths.max() > lm.config.max_frames:
            raise ValueError(f"an utterance needs {int(lengths.max())} frames; the LM holds {lm.config.max_frames}.")
        frames = torch.full((len(rows), lm.num_streams, int(lengths.max())), end)
        for i, r in enumerate(rows):
            frames[i, :, :r.shape[1]] = r
        return {"text_ids": ids, "text_mask": mask, "frames": frames, "num_valid": lengths}

    return collate


def make_loss(mctp_weight: float, mctp_frames: int | None):
    def loss_fn(model, batch):
        lm = getattr(model, "module", model)
        out = model(batch["text_ids"], batch["text_mask"], batch["frames"], mctp_detach=True, mctp_frames=mctp_frames)
        frames, valid = batch["frames"], batch["num_valid"]
        loss = speech_lm_loss(out.logits, frames, valid, lm.start_id)
        with torch.no_grad():
            metrics = {"ce": loss.item(),
                       "ce_semantic": speech_lm_loss(out.logits, frames, valid, lm.start_id,
                                                     codebook=lm.semantic_stream).item()}
            if lm.config.text_stream:
                metrics["ce_text"] = speech_lm_loss(out.logits, frames, valid, lm.start_id, codebook=0).item()
        if out.mctp_logits:
            mctp = torch.stack([speech_lm_loss(logits, frames, valid, lm.start_id, targets=t)
                                for logits, t in zip(out.mctp_logits, out.mctp_targets)])
            metrics.update({f"ce_mctp{k}": v.item() for k, v in enumerate(mctp, start=1)})
            loss = loss + mctp_weight * mctp.mean()
        return loss, metrics

    return loss_fn


@torch.no_grad()
def text_reliance(lm: SpeechLM, collate, items: list[dict], frame_rate: float | None = None) -> dict:
    """How much the LM listens to the transcript: the semantic codebook's teacher-forced cross-entropy on
    `items` with their own transcripts, with the transcripts rolled by one (each row gets another's) and
    with none. A model that has learnt the alignment scores far lower with its own text."""
    if lm.config.text_stream and frame_rate is None:
        raise ValueError("the probe of a text-stream LM needs the codec's frame_rate.")
    was_training = lm.training
    lm.eval()
    rolled = [{"text": items[(i + 1) % len(items)]["text"], "codes": item["codes"]} for i, item in enumerate(items)]
    empty = [{"text": "", "codes": item["codes"]} for item in items]
    if lm.config.text_stream:  # another's characters at their own times, as many as this utterance lasts; none
        for i, row in enumerate(rolled):
            other = items[(i + 1) % len(items)]
            fits = int((other["char_starts"] < row["codes"].shape[1] / frame_rate).sum())
            fits = min(fits, row["codes"].shape[1])  # at most one character a frame (aligned_text_stream)
            row["text"], row["char_starts"] = other["text"][:fits], other["char_starts"][:fits]
        for row in empty:
            row["char_starts"] = torch.zeros(0)
    out = {}
    for name, rows in (("own", items), ("other", rolled), ("none", empty)):
        batch = collate(rows)
        logits = lm(batch["text_ids"], batch["text_mask"], batch["frames"]).logits
        out[name] = speech_lm_loss(logits, batch["frames"], batch["num_valid"], lm.start_id,
                                   codebook=lm.semantic_stream).item()
    lm.train(was_training)
    return out


def text_reliance_hook(collate, probes: dict[str, list[dict]], every: int, frame_rate: float | None = None):
    """Every `every` steps, the `text_reliance` probe on each named set of utterances (training ones and
    held-out ones: a gap between them is overfitting)."""
    def hook(step, model, accelerator, log):
        if step % every == 0 and accelerator.is_main_process:
            for name, items in probes.items():
                ce = text_reliance(accelerator.unwrap_model(model), collate, items, frame_rate)
                log(f"step {step}: semantic CE on {len(items)} {name} utterances with the own transcripts "
                    f"{ce['own']:.3f}, another's {ce['other']:.3f}, none {ce['none']:.3f}")
    return hook


def check_prompt_room(lm: SpeechLM, tokenizer, texts: list[str]) -> None:
    """Fail before training, not at the first batch that holds it, when the longest transcript (as the LM
    reads it: letters or phonemes, then [SOA]) does not fit the LM's text prefix."""
    longest = max(len(token_ids(tokenizer, t)) for t in texts) + 1
    if longest > lm.config.max_text_tokens:
        raise SystemExit(f"the longest transcript (training or probe) needs {longest} text tokens with [SOA]; the LM's prefix "
                         f"holds {lm.config.max_text_tokens}. Pass --max-text-tokens {-(-longest // 8) * 8} "
                         "(or fewer --utterances).")


def fitting(lm: SpeechLM, codes: SpeechCodes, name: str) -> torch.utils.data.Subset:
    """The utterances whose delayed frames (codes, END, then the largest delay) fit the LM's context and,
    with a text stream, whose characters fit their frames (one a frame); the recipe says how many it
    leaves out rather than fail at the first batch that holds one."""
    frames = codes.offsets.diff()
    needed = frames + 1 + lm.max_delay
    fits = needed <= lm.config.max_frames
    if not fits.any():
        raise SystemExit(f"none of the {len(codes)} {name} utterances fits the LM's {lm.config.max_frames} frames; "
                         f"pass --max-frames {int(needed.min())} or more.")
    if not fits.all():
        print(f"leaving out {int((~fits).sum())} of {len(codes)} {name} utterances: they need up to "
              f"{int(needed.max())} frames, the LM holds {lm.config.max_frames} (--max-frames for a new LM)")
    if lm.config.text_stream and codes.char_starts is not None:
        too_fast = torch.tensor([len(starts) for starts in codes.char_starts]) > frames
        if (fits & too_fast).any():
            print(f"leaving out {int((fits & too_fast).sum())} of {len(codes)} {name} utterances that say more "
                  "characters than they have frames (the aligned text stream holds one a frame)")
        fits &= ~too_fast
    keep = fits.nonzero().flatten().tolist()
    if not keep:
        raise SystemExit(f"none of the {len(codes)} {name} utterances has as many frames as characters; a codec "
                         "with a higher frame rate, or slower speech, is needed for an aligned text stream.")
    return torch.utils.data.Subset(codes, keep)


def initial_lm(args, text_vocab_size: int, codebook_size: int) -> SpeechLM:
    """A fresh SpeechLM from the size arguments, or the trained one --init names, checked against the text
    input and the codec this run uses."""
    if args.init is None:
        return SpeechLM(text_vocab_size=text_vocab_size, max_text_tokens=args.max_text_tokens,
                        num_codebooks=args.codebooks, codebook_size=codebook_size, max_frames=args.max_frames,
                        hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                        depth_hidden_size=args.depth_hidden, depth_layers=args.depth_layers,
                        depth_heads=max(args.depth_hidden // 32, 1), num_mctp_modules=args.mctp_modules,
                        text_dropout=args.text_dropout, text_stream=args.text_stream, text_lead=args.text_lead)
    lm = load_to_continue(
        args.init, SpeechLM, component="lm",
        wanted={"text_vocab_size": text_vocab_size, "num_codebooks": args.codebooks, "codebook_size": codebook_size},
        advice="pass the --text-input, --codebooks and --codec it was trained with.")
    if args.text_stream and not lm.config.text_stream:  # warm-start DSM-TTS from a prefix-only LM
        return add_text_stream(lm, text_lead=args.text_lead)
    if lm.config.text_stream and not args.text_stream:
        raise SystemExit(f"--init {args.init} has a text stream; pass --text-stream to go on training it.")
    return lm


def build_parser() -> argparse.ArgumentParser:
    """The recipe's arguments (the benchmarks build its LM from their defaults too)."""
    p = argparse.ArgumentParser(prog="zoo train tts-speech", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--codec", default="codec-speech", help="speech codec: built-in name, folder or Hub id")
    p.add_argument("--codebooks", type=int, default=4, help="codebooks the LM predicts (the codec's first)")
    p.add_argument("--utterances", type=int, default=3000)
    p.add_argument("--cache-dir", default=None, help="the speech data cache")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=7e-4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--depth-hidden", type=int, default=128)
    p.add_argument("--depth-layers", type=int, default=2)
    p.add_argument("--max-text-tokens", type=int, default=240)
    p.add_argument("--max-frames", type=int, default=340)
    p.add_argument("--mctp-modules", type=int, default=4)
    p.add_argument("--mctp-weight", type=float, default=1.0)
    p.add_argument("--mctp-frames", type=int, default=32, help="frames per batch at which each MCTP module is scored")
    p.add_argument("--text-dropout", type=float, default=0.1)
    p.add_argument("--text-input", default="characters", choices=["characters", "phonemes"],
                   help="what the LM reads: the transcript's letters or espeak-ng's phonemes (IPA) of it")
    p.add_argument("--text-stream", action="store_true",
                   help="also an aligned text stream (Kyutai's DSM-TTS): the characters where they are spoken")
    p.add_argument("--text-lead", type=int, default=6, help="frames the text stream runs ahead of the audio")
    p.add_argument("--aligner", default="asr-speech", help="the CTC recogniser that aligns the transcripts "
                                                           "(--text-stream)")
    p.add_argument("--probe-utterances", type=int, default=32,
                   help="utterances of the training and of the validation split the text-reliance probe reads "
                        "at every checkpoint (the validation ones show overfitting)")
    p.add_argument("--seed", type=int, default=0)
    add_group_by_length(p)
    add_mixed_precision(p)
    p.add_argument("--init", default=None, help="a trained CodecTTSPipeline or SpeechLM (folder or built-in name) "
                                                "to go on training; the size arguments are then its own. With "
                                                "--text-stream, a prefix-only LM gains a fresh text stream")
    return p


def main(argv=None) -> int:
    import zoo
    from pipelines import CodecTTSPipeline
    from tokenizers_audio import SpeechCodec

    args = build_parser().parse_args(argv)
    if args.probe_utterances < 2:
        raise SystemExit(f"--probe-utterances must be at least 2 (the probe gives each one another's text), "
                         f"got {args.probe_utterances}.")

    codec = zoo.load(args.codec)
    if not isinstance(codec, SpeechCodec):
        raise SystemExit(f"--codec {args.codec} is a {type(codec).__name__}, not a SpeechCodec.")
    codec.eval()
    phonemes = args.text_input == "phonemes"
    if phonemes and args.text_stream:
        raise SystemExit("--text-stream aligns the letters of the transcripts; it reads --text-input characters.")
    tokenizer = character_tokenizer(PHONEMES if phonemes else None)
    data = SpeechDataset("train", args.utterances, cache_dir=args.cache_dir)
    codes = SpeechCodes(codec, data, args.codebooks, Path(args.out) / f"codes-train-{args.utterances}.safetensors")
    held_out_data = SpeechDataset("validation", args.probe_utterances, cache_dir=args.cache_dir)
    held_out = SpeechCodes(codec, held_out_data, args.codebooks,
                           Path(args.out) / f"codes-validation-{args.probe_utterances}.safetensors")
    texts = codes.texts + held_out.texts
    text_map = dict(zip(texts, phonemize(texts))) if phonemes else None
    if args.text_stream:
        aligner = zoo.load(args.aligner).eval()
        for split, part, part_data in (("train", codes, data), ("validation", held_out, held_out_data)):
            part.align(aligner, part_data, Path(args.out) / f"alignments-{split}-{len(part_data)}.safetensors")
    torch.manual_seed(args.seed)
    lm = initial_lm(args, len(tokenizer), codec.config.codebook_size)
    check_prompt_room(lm, tokenizer, texts if text_map is None else list(text_map.values()))
    config = cosine_config(args, warmup=200, betas=(0.9, 0.95), weight_decay=0.05,
                           checkpoint_every=min(500, args.steps))
    collate = make_collate(lm, tokenizer, text_map, frame_rate=codec.config.frame_rate)
    codes, held_out = fitting(lm, codes, "training"), fitting(lm, held_out, "validation")
    n = args.probe_utterances
    probes = {"training": [codes[i] for i in range(max(0, len(codes) - n), len(codes))],  # the last n
              "validation": [held_out[i] for i in range(len(held_out))]}
    frames = codes.dataset.offsets.diff()[codes.indices] if args.group_by_length else None
    lm = train(lm, codes, make_loss(args.mctp_weight, args.mctp_frames), config, collate_fn=collate, lengths=frames,
               hooks=[text_reliance_hook(collate, probes, config.checkpoint_every, codec.config.frame_rate)])
    from accelerate import PartialState

    if PartialState().is_main_process:
        pipe = CodecTTSPipeline(lm=lm, tokenizer=tokenizer, codec=codec, text_input=args.text_input)
        pipe.save_pretrained(f"{args.out}/pipeline")
        print(json.dumps({"parameters_M": sum(p.numel() for p in lm.parameters()) / 1e6,
                          "frame_rate": codec.config.frame_rate, "codebooks": args.codebooks}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
