"""The catalogue of named checkpoints. Pure data: importing it loads no model code.

Three kinds of entry:
- "builtin": a folder shipped inside this package (`weights_registry/builtin/<folder>`), trained by a
  zoo recipe; its README.md is the model card.
- "hub": a zoo-format repository on the Hugging Face Hub, pinned to a revision (and sha256 per file).
- "original": an official checkpoint in its original format, converted by `zoo convert NAME`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "builtin"
KINDS = ("builtin", "hub", "original")


@dataclass(frozen=True)
class Entry:
    """One named checkpoint of the catalogue: a built-in folder, a pinned Hub repository, or an official
    checkpoint with the converter that reads it.

    Examples:
        >>> from weights_registry import get_entry
        >>> entry = get_entry("llamagen-shapes")
        >>> entry.kind, entry.path.name
        ('builtin', 'llamagen-shapes')
        >>> get_entry("llamagen-gpt-b-256").converter      # zoo convert llamagen-gpt-b-256 --out ...
        'llamagen-gpt'
    """

    name: str
    kind: str
    description: str
    folder: str | None = None  # builtin: folder under BUILTIN_DIR
    repo_id: str | None = None  # hub / original
    revision: str | None = None
    files: dict[str, str | None] = field(default_factory=dict)  # file name -> sha256 (None: not pinned yet)
    converter: str | None = None  # original: name of a converter in weights_registry.converters
    converter_kwargs: dict = field(default_factory=dict)
    paper: str | None = None

    @property
    def path(self) -> Path | None:
        return BUILTIN_DIR / self.folder if self.kind == "builtin" else None

    @property
    def pinned(self) -> bool:
        return bool(self.revision) and bool(self.files) and all(self.files.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pinned"] = self.pinned
        if self.path is not None:
            d["path"] = str(self.path)
        return d


# The sha256 of the official LlamaGen files could not be read on the offline machine that wrote
# this entry; `zoo convert` prints the digest of a verified download so it can be pinned here.
_LLAMAGEN = "https://arxiv.org/abs/2406.06525"
_ENTRIES = [
    Entry(f"llamagen-gpt-{size.lower()}-{res}", "original",
          f"LlamaGen GPT-{size} class-conditional ImageNet {res}px (official checkpoint, converted)",
          repo_id="FoundationVision/LlamaGen", revision="main", files={f"c2i_{size}_{res}.pt": None},
          converter="llamagen-gpt", converter_kwargs={"image_size": res}, paper=_LLAMAGEN)
    for size, res in [("B", 256), ("B", 384), ("L", 256), ("L", 384), ("XL", 384), ("XXL", 384), ("3B", 384)]
] + [
    Entry(f"llamagen-dd-{size.lower()}", "original",
          f"Distilled Decoding (DD1) one/two-step generator distilled from LlamaGen-{size}, ImageNet 256px "
          "(official checkpoint, converted)",
          repo_id="microsoft/distilled_decoding", revision="main", files={f"LlamaGen-DD/llamagen-{size}.pt": None},
          converter="llamagen-dd", converter_kwargs={"image_size": 256}, paper="https://arxiv.org/abs/2412.17153")
    for size in ("B", "L")
]

# Mimi, the codec of Moshi (CC-BY 4.0): the transformers-format repository and moshi's own tokenizer file
_ENTRIES += [
    Entry("mimi", "original", "Mimi speech codec, 24 kHz, 12.5 Hz, 32 codebooks of 2048 (Kyutai; transformers "
          "layout, converted to SpeechCodec)", repo_id="kyutai/mimi", revision="main",
          files={"model.safetensors": None}, converter="mimi", paper="https://arxiv.org/abs/2410.00037"),
    *[Entry(f"flextok-{name.replace('_', '-')}", "original",
            f"FlexTok {'/'.join(name.split('_')[:2])} encoder/decoder depths, trained on {name.split('_')[2].upper()} "
            "(Apple/EPFL; 1-256 tokens, rectified-flow decoder; pass the VAE's config.json with --vae-config)",
            repo_id=f"EPFL-VILAB/flextok_{name}", revision="main", files={"model.safetensors": None},
            converter="flextok", paper="https://arxiv.org/abs/2502.13967")
      for name in ("d12_d12_in1k", "d18_d18_in1k", "d18_d28_in1k", "d18_d28_dfn")],
    Entry("moshi-mimi", "original", "Mimi speech codec as shipped with Moshi (moshi layout, fused attention; "
          "converted to SpeechCodec)", repo_id="kyutai/moshiko-pytorch-bf16", revision="main",
          files={"tokenizer-e351c8d8-checkpoint125.safetensors": None}, converter="mimi",
          paper="https://arxiv.org/abs/2410.00037"),
]

_BUILTINS = [
    Entry("shapes-classifier", "builtin", "Shapes attribute classifier; feature space of Shapes-FID / Shapes-IS "
          "(zoo recipe: zoo train shapes-classifier)", folder="shapes-classifier"),
    Entry("vae-shapes", "builtin", "AutoencoderKL for 64x64 Shapes: 4 x 16 x 16 latents (f4), the latent space of "
          "FlexTok / KARL (zoo recipe: zoo train vae-shapes)", folder="vae-shapes"),
    Entry("flextok-shapes", "builtin", "FlexTok for 64x64 Shapes over vae-shapes latents: 1..64 ordered 1D tokens, "
          "1,000 FSQ codes, rectified-flow decoder (zoo recipe: zoo train flextok-shapes; version 3, 3,000 + "
          "4,000 + 4,000 steps)",
          folder="flextok-shapes", paper="https://arxiv.org/abs/2502.13967"),
    Entry("karl-shapes", "builtin", "KARL one-pass adaptive tokenizer for 64x64 Shapes over vae-shapes latents: up to "
          "64 tokens, as many as a target error needs (zoo recipe: zoo train karl-shapes; version 2, 2,000 + 600 "
          "+ 4,000 steps)",
          folder="karl-shapes", paper="https://arxiv.org/abs/2507.07995"),
    Entry("flextok-ar-shapes", "builtin", "Class-conditional AR generation over flextok-shapes tokens, any prefix "
          "length, KARL-chosen lengths with num_tokens='auto' (FlexTokPipeline; zoo recipe: zoo train "
          "flextok-ar-shapes; version 3, 2,000 steps)", folder="flextok-ar-shapes",
          paper="https://arxiv.org/abs/2502.13967"),
    Entry("vat-primitives", "builtin", "VAT 3D tokenizer for Primitives shapes: 256 surface points with normals to 127 "
          "multi-scale tokens (1, 2, 4, ..., 64; 159 bytes), triplane occupancy decoder, meshes by marching cubes "
          "(zoo recipe: zoo train vat-primitives; version 5, 4,500 + 5,000 + 6,000 + 4,000 + 8,000 steps, the last two "
          "with --prefix-rate 0.5)", folder="vat-primitives",
          paper="https://arxiv.org/abs/2412.02202"),
    Entry("vat-ar-primitives", "builtin", "Class-conditional next-scale AR over vat-primitives tokens, meshes out "
          "(VAT3DPipeline with vat-primitives version 5; zoo recipe: zoo train vat-ar-primitives; "
          "version 5, 3,000 steps)",
          folder="vat-ar-primitives", paper="https://arxiv.org/abs/2412.02202"),
    Entry("vq-shapes", "builtin", "LlamaGen-style VQ tokenizer for 64x64 Shapes: 16x16 tokens, 4096 codes "
          "(zoo recipe: zoo train vq-shapes; version 2, 5,000 steps)", folder="vq-shapes"),
    Entry("llamagen-shapes", "builtin", "Class-conditional LlamaGen-style AR model over vq-shapes tokens "
          "(ARImagePipeline; zoo recipe: zoo train llamagen-shapes; version 4, 11,750 steps)",
          folder="llamagen-shapes"),
    Entry("ctf-shapes", "builtin", "Coarse-to-fine (CTF) class-conditional AR model over vq-shapes tokens: 128 "
          "coarse labels, then one refiner pass (CTFPipeline; zoo recipe: zoo train ctf-shapes)", folder="ctf-shapes"),
    Entry("token-shuffle-shapes", "builtin", "Token-Shuffle text-to-image on Shapes captions at 128x128: 2x2 "
          "vq-shapes tokens per AR step, 256 steps for 32x32 tokens (TokenShufflePipeline; zoo recipe: "
          "zoo train token-shuffle-shapes --window 2; a short first run)", folder="token-shuffle-shapes"),
    Entry("asr-speech", "builtin", "Streaming CTC speech recogniser for zoo's espeak-ng speech: the WER / CER judge "
          "and the semantic teacher of codec-speech (zoo recipe: zoo train asr-speech; version 3, 2,000 + 2,400 + 1,500 "
          "steps, the last two through equaliser, low-pass, room and narrow-band line effects)", folder="asr-speech"),
    Entry("codec-speech", "builtin", "Streaming speech codec (Mimi layout, X-Codec semantic branch taught by "
          "asr-speech): 24 kHz, 25 Hz, 8 codebooks of 1024, 2 kbps (zoo recipe: zoo train codec-speech; version 6, "
          "6,000 steps, then 11,800 of the decoder alone)", folder="codec-speech"),
    Entry("codec-speech-acoustic", "builtin", "codec-speech without the semantic branch (X-Codec's acoustic-only "
          "ablation): same layout, 8 codebooks of 1024, 2 kbps (zoo recipe: zoo train codec-speech --no-semantic; "
          "6,000 steps)", folder="codec-speech-acoustic"),
    Entry("tts-speech", "builtin", "Text to speech on codec-speech tokens (4 codebooks, 25 Hz): Moshi-style "
          "temporal + depth transformers with acoustic delay, an aligned text stream 6 frames ahead (Kyutai's "
          "DSM-TTS), 4 VITA-Audio MCTP modules (CodecTTSPipeline; zoo recipe: zoo train tts-speech --text-stream; "
          "version 3, 7,000 steps on 20,000 utterances)", folder="tts-speech"),
    Entry("tts-speech-prefix", "builtin", "tts-speech version 2: the same LM with the text as a prefix only, no "
          "text stream; the LM of SpeechContinuationPipeline and the baseline of the text-stream comparison "
          "(zoo recipe: zoo train tts-speech; 3,000 steps on 3,000 utterances)", folder="tts-speech-prefix"),
    Entry("dd-shapes", "builtin", "One/two-step Distilled Decoding student of llamagen-shapes "
          "(DistilledPipeline; zoo recipe: zoo train dd-shapes; version 2, a short CPU run)", folder="dd-shapes"),
]

CATALOGUE: dict[str, Entry] = {e.name: e for e in _BUILTINS + _ENTRIES}


def register(entry: Entry) -> Entry:
    """Add an entry (used by tests and by packages that ship their own models)."""
    if entry.kind not in KINDS:
        raise ValueError(f"unknown entry kind {entry.kind!r}; pass one of {KINDS}.")
    CATALOGUE[entry.name] = entry
    return entry


def get_entry(name: str) -> Entry | None:
    return CATALOGUE.get(name)


def list_models(kind: str | None = None) -> list[Entry]:
    """Catalogue entries, optionally of one kind ("builtin", "hub", "original"), sorted by name.

    Examples:
        >>> import zoo
        >>> "llamagen-shapes" in [e.name for e in zoo.list_models("builtin")]
        True
        >>> {e.kind for e in zoo.list_models()} <= {"builtin", "hub", "original"}
        True
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; pass one of {KINDS} or None.")
    return sorted((e for e in CATALOGUE.values() if kind in (None, e.kind)), key=lambda e: e.name)
