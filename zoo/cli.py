"""The `zoo` command: list | info | generate | tokenize | reconstruct | train | convert | bench.

Each subcommand has --help. Heavy imports (torch, diffusers) happen inside the subcommand that needs
them, so `zoo list` and `zoo --help` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path

# name -> module with main(argv); the module lives in the installed `benchmarks` package
BENCHMARKS = {"ar-engine": "benchmarks.ar_engine", "gpu-engine": "benchmarks.gpu_engine", "c2i": "benchmarks.c2i",
              "ctf": "benchmarks.ctf", "distilled": "benchmarks.distilled", "token-shuffle": "benchmarks.token_shuffle",
              "image-tokenizer": "benchmarks.image_tokenizer", "flextok": "benchmarks.flextok", "vat": "benchmarks.vat",
              "recognizer": "benchmarks.recognizer", "codec": "benchmarks.codec", "tts": "benchmarks.tts",
              "speech-batches": "benchmarks.speech_batches", "train-step": "benchmarks.train_step"}
# converter name -> (module, function); each function takes the checkpoint path plus keyword options
CONVERTERS = {"llamagen-gpt": ("weights_registry.converters.llamagen", "convert_llamagen_gpt"),
              "llamagen-dd": ("weights_registry.converters.llamagen", "convert_llamagen_dd"),
              "mimi": ("weights_registry.converters.mimi", "convert_mimi_checkpoint"),
              "flextok": ("weights_registry.converters.flextok", "convert_flextok_checkpoint")}


def _fail(message: str) -> int:
    print(f"zoo: error: {message}", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------------- list / info
def cmd_list(args) -> int:
    from weights_registry import list_models

    entries = list_models(args.kind)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        print("no models in the catalogue" + (f" of kind {args.kind!r}" if args.kind else ""))
        return 0
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.kind:<8}  {e.description}")
    return 0


def cmd_info(args) -> int:
    from weights_registry import get_entry

    entry = get_entry(args.name)
    if entry is not None:
        info = entry.to_dict()
        card = entry.path / "README.md" if entry.path else None
        if card is not None and card.is_file():
            info["model_card"] = str(card)
    elif Path(args.name).is_dir():
        folder = Path(args.name)
        info = {"name": args.name, "kind": "folder"}
        for file in ("model_index.json", "config.json"):
            if (folder / file).is_file():
                info[file] = json.loads((folder / file).read_text())
    else:
        return _fail(f"{args.name!r} is neither in the catalogue nor a local folder; `zoo list` shows the names.")
    print(json.dumps(info, indent=2))
    return 0


# ------------------------------------------------------------------------------------------- generate
def _save_output(output, out: Path) -> str:
    """Write a pipeline output to `out`, by what it holds."""
    import numpy as np
    import torch

    if hasattr(output, "meshes"):
        if out.suffix == ".png":
            output.preview().save(out)
            return f"a preview of {len(output.meshes)} mesh(es)"
        if out.suffix not in (".glb", ".obj", ".ply", ".stl"):
            raise ValueError(f"meshes are written as .glb, .obj, .ply or .stl (or a .png preview), not {out.suffix!r}.")
        paths = [out] if len(output.meshes) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}")
                                                       for i in range(len(output.meshes))]
        for path, mesh in zip(paths, output.meshes):
            mesh.export(path)
        return f"{len(paths)} mesh(es) ({sum(len(m.faces) for m in output.meshes)} faces)"
    if hasattr(output, "images"):
        from zoo.display import image_grid

        image_grid(output.images).save(out)
        return f"{len(output.images)} image(s) as a grid"
    if hasattr(output, "tokens"):
        tokens = output.tokens
        tokens = tokens.cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        if out.suffix == ".npy":
            np.save(out, tokens)
        elif out.suffix == ".pt":
            torch.save(torch.from_numpy(tokens), out)
        else:
            raise ValueError(f"token outputs are written as .npy or .pt, not {out.suffix!r}.")
        return f"tokens {tuple(tokens.shape)}"
    if hasattr(output, "audios"):
        from zoo.audio import write_wav

        if out.suffix != ".wav":
            raise ValueError(f"audio outputs are written as .wav, not {out.suffix!r}.")
        paths = [out] if len(output.audios) == 1 else [out.with_name(f"{out.stem}-{i}.wav")
                                                       for i in range(len(output.audios))]
        for path, audio in zip(paths, output.audios):
            write_wav(path, torch.as_tensor(audio), output.sample_rate)
        seconds = sum(len(a) for a in output.audios) / output.sample_rate
        return f"{len(paths)} waveform(s), {seconds:.2f} s at {output.sample_rate} Hz,"
    raise ValueError(f"zoo generate does not know how to write a {type(output).__name__}.")


def cmd_generate(args) -> int:
    import torch

    import zoo

    pipe = zoo.load(args.model)
    params = inspect.signature(pipe.__call__).parameters
    labels = [int(c) if c.lstrip("-").isdigit() else c for c in args.class_labels] if args.class_labels else None
    given = {
        "class_labels": labels, "prompt": args.prompt, "num_inference_steps": args.steps,
        "num_images_per_prompt": args.num,
        "guidance_scale": args.guidance_scale, "temperature": args.temperature, "top_k": args.top_k,
        "top_p": args.top_p, "num_tokens": args.num_tokens, "text": args.text, "max_seconds": args.max_seconds,
        "mctp_schedule": args.mctp_schedule,
    }
    kwargs = {k: v for k, v in given.items() if v is not None}
    unsupported = sorted(k for k in kwargs if k not in params)
    if unsupported:
        return _fail(f"{type(pipe).__name__} does not take {unsupported}; it takes {sorted(params)}.")
    kwargs["generator"] = torch.Generator().manual_seed(args.seed)
    output = pipe(**kwargs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"wrote {_save_output(output, args.out)} to {args.out}")
    return 0


# ------------------------------------------------------------------------------------------- train / tokenize
def cmd_train(args) -> int:
    from zoo.train import RECIPES

    if args.recipe is None or args.recipe not in RECIPES:
        names = ", ".join(sorted(RECIPES)) or "none yet"
        return _fail(f"unknown recipe {args.recipe!r}; available recipes: {names}.")
    return importlib.import_module(RECIPES[args.recipe]).main(args.recipe_args)


def cmd_tokenize(args) -> int:
    import zoo
    from zoo.data import tokens

    vq = zoo.load(args.tokenizer)
    if isinstance(vq, zoo.SpeechCodec):
        return _tokenize_audio(vq.eval(), args)
    if isinstance(vq, zoo.FlexTokPipeline):
        vq = vq.tokenizer
    if not isinstance(vq, (zoo.VQModel, zoo.FlexTok)):
        return _fail(f"{args.tokenizer} is a {type(vq).__name__}; zoo tokenize takes an image tokenizer "
                     "(VQModel, FlexTok) or a speech codec (SpeechCodec).")
    if args.inputs:
        return _fail(f"{args.tokenizer} tokenizes images: pass --data shapes or --data FOLDER, not files {args.inputs}.")
    if args.out is None:
        return _fail("pass --out FILE.safetensors for the token file.")
    if args.data == "shapes":
        image_at, labels, class_names = tokens.shapes_images(args.split, args.num, args.size)
        captions = tokens.shapes_captions(args.split, len(labels))
    else:
        image_at, labels, class_names = tokens.folder_images(args.data, args.num, args.size)
        captions = tokens.folder_captions(args.data, args.num)
    ids = tokens.tokenize(vq.eval(), image_at, len(labels), batch_size=args.batch_size)
    extra = {"captions": captions} if captions is not None else {}
    tokens.save_tokens(args.out, ids, labels, tokenizer=str(args.tokenizer), data=str(args.data), split=args.split,
                       size=args.size, class_names=class_names, **extra)
    print(f"wrote {tuple(ids.shape)} token ids of {len(set(labels.tolist()))} class(es) to {args.out}")
    return 0


def _tokenize_audio(codec, args) -> int:
    """Encode WAV files into codes [num_codebooks, frames], one .npy / .pt file per input."""
    import numpy as np
    import torch

    from zoo.audio import read_wav

    if not args.inputs:
        return _fail("pass one or more WAV files to tokenize with a speech codec: zoo tokenize codec-speech in.wav")
    if args.out is not None and len(args.inputs) > 1:
        return _fail("--out names one output file; drop it to write IN.codes.npy beside each of several inputs.")
    for path in args.inputs:
        wav, rate = read_wav(path)
        codes = codec.encode(wav, sample_rate=rate, num_codebooks=args.codebooks, resample=True)[0]
        out = args.out or Path(path).with_suffix(".codes.npy")
        if out.suffix == ".pt":
            torch.save(codes, out)
        else:
            np.save(out, codes.numpy())
        print(f"{path}: {wav.shape[-1] / rate:.2f} s -> codes {tuple(codes.shape)} "
              f"({codec.bitrate(codes.shape[0]):.0f} bps) in {out}")
    return 0


def cmd_reconstruct(args) -> int:
    """Encode a WAV file with a speech codec at --codebooks, or an image with an image tokenizer (at
    --num-tokens for FlexTok, --max-error for KARL), and decode it again."""
    import zoo
    from zoo.audio import read_wav, write_wav

    codec = zoo.load(args.codec)
    if isinstance(codec, zoo.FlexTokPipeline):
        codec = codec.tokenizer
    if isinstance(codec, (zoo.VQModel, zoo.FlexTok, zoo.KARLTokenizer)):
        return _reconstruct_image(codec.eval(), args)
    if not isinstance(codec, zoo.SpeechCodec):
        return _fail(f"{args.codec} is a {type(codec).__name__}; zoo reconstruct takes a speech codec or an image "
                     "tokenizer (VQModel, FlexTok, KARLTokenizer).")
    wav, rate = read_wav(args.input)
    codes = codec.eval().encode(wav, sample_rate=rate, num_codebooks=args.codebooks, resample=True)
    audio = codec.decode(codes, length=round(wav.shape[-1] * codec.config.sample_rate / rate))
    write_wav(args.out, audio[0], codec.config.sample_rate)
    print(f"wrote {args.out}: {codes.shape[1]} codebooks x {codes.shape[2]} frames "
          f"({codec.bitrate(codes.shape[1]):.0f} bps), {audio.shape[-1] / codec.config.sample_rate:.2f} s")
    return 0


def _reconstruct_image(tokenizer, args) -> int:
    import torch

    import zoo
    from zoo.data.tokens import load_image

    size = getattr(tokenizer.config, "image_size", None) or args.size
    image = load_image(args.input, size)[None].to(tokenizer.device)  # centre-cropped, resized, in [-1, 1]
    with torch.no_grad():
        if isinstance(tokenizer, zoo.FlexTok):
            k = args.num_tokens or tokenizer.num_registers
            ids = tokenizer.tokenize(image)[:, :k]
            out, what = tokenizer.detokenize(ids, generator=torch.Generator().manual_seed(0)), f"{k} tokens"
        elif isinstance(tokenizer, zoo.KARLTokenizer):
            tokens = tokenizer.tokenize(image, max_error=args.max_error)
            out, what = tokenizer.detokenize(tokens.ids, tokens.keep), f"{int(tokens.num_tokens[0])} tokens"
        else:
            ids = tokenizer.encode(image)
            out, what = tokenizer.decode(ids), f"{ids[0].numel()} tokens"
    from diffusers.image_processor import VaeImageProcessor

    VaeImageProcessor().postprocess(out.clamp(-1, 1).float(), output_type="pil")[0].save(args.out)
    print(f"wrote {args.out}: {size}x{size} from {what}")
    return 0


# ------------------------------------------------------------------------------------------- convert
def cmd_convert(args) -> int:
    from weights_registry import get_entry

    from zoo.hub import download, sha256_of

    entry = get_entry(args.source)
    kwargs = {}
    if entry is not None and entry.kind == "original":
        converter = entry.converter
        kwargs.update(entry.converter_kwargs)
        (file_name,) = entry.files
        if args.checkpoint is None:
            folder = download(entry.repo_id, entry.revision, files=[file_name])
            args.checkpoint = folder / file_name
        digest = sha256_of(args.checkpoint / file_name if args.checkpoint.is_dir() else args.checkpoint)
        expected = entry.files[file_name]
        if expected and digest != expected:
            return _fail(f"sha256 of {args.checkpoint} is {digest}, expected {expected}: corrupt or wrong file.")
        if not expected:
            print(f"note: {entry.name} has no pinned sha256 yet; this file's sha256 is {digest}")
    elif args.source in CONVERTERS:
        converter = args.source
        if args.checkpoint is None:
            return _fail(f"converter {args.source!r} needs --checkpoint PATH.")
    else:
        names = sorted(CONVERTERS) + [e.name for e in __import__("weights_registry").list_models("original")]
        return _fail(f"unknown source {args.source!r}; pass one of: {', '.join(names)}.")
    for key in ("num_heads", "image_size", "vae_config"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    module, function = CONVERTERS[converter]
    model = getattr(importlib.import_module(module), function)(args.checkpoint, **kwargs)

    from pipelines import ARTokenPipeline
    from zoo.ar import ARTransformer

    if isinstance(model, ARTransformer):  # token models load as a pipeline
        ARTokenPipeline(transformer=model).save_pretrained(args.out)
    else:
        model.save_pretrained(args.out)
    print(f"converted {args.checkpoint} -> {args.out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          "parameters); load it with zoo.load(folder)")
    return 0


# ------------------------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    if args.name not in BENCHMARKS:
        return _fail(f"unknown benchmark {args.name!r}; available: {', '.join(sorted(BENCHMARKS))}.")
    return importlib.import_module(BENCHMARKS[args.name]).main(args.bench_args) or 0


# ------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the catalogue of named models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--kind", choices=["builtin", "hub", "original"], help="only entries of this kind")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a catalogue entry or a local model folder")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="generate with a model (built-in name, folder or Hub id)")
    p.add_argument("model")
    p.add_argument("--class", dest="class_labels", action="append", help="class id or name (repeatable)")
    p.add_argument("--num", type=int, help="images per class / prompt")
    p.add_argument("--prompt", help="text prompt")
    p.add_argument("--text", action="append", help="text to say (speech pipelines; repeatable)")
    p.add_argument("--max-seconds", type=float, help="longest audio to generate (speech pipelines)")
    p.add_argument("--mctp-schedule", help="speech pipelines with MCTP modules: turbo, boost, balance or vanilla")
    p.add_argument("--steps", type=int, help="inference steps (for pipelines that take them)")
    p.add_argument("--num-tokens", type=int, help="tokens to sample (token pipelines)")
    p.add_argument("--guidance-scale", type=float)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output file: .png grid for images, .npy/.pt for tokens, .wav for speech")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("tokenize", help="encode images (Shapes or your own folder) or WAV files into tokens")
    p.add_argument("tokenizer", help="an image tokenizer or speech codec: built-in name, folder or Hub id")
    p.add_argument("inputs", nargs="*", type=Path, help="WAV files (speech codecs); writes IN.codes.npy")
    p.add_argument("--codebooks", type=int, help="speech codecs: codebooks to keep (default all)")
    p.add_argument("--data", default="shapes", help="'shapes', or a folder of images (subfolders = classes)")
    p.add_argument("--split", default="train", choices=["train", "validation", "test"], help="Shapes split")
    p.add_argument("--num", type=int, default=50000, help="number of images (at most)")
    p.add_argument("--size", type=int, default=64, help="image size in pixels")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, help="output: .safetensors token file (images), .npy / .pt codes (audio)")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("reconstruct", help="encode and decode a WAV file (speech codec) or an image (image tokenizer)")
    p.add_argument("codec", help="a speech codec or an image tokenizer: built-in name, folder or Hub id")
    p.add_argument("input", type=Path, help="WAV file (any rate; resampled to the codec's) or image file")
    p.add_argument("--codebooks", type=int, help="speech codecs: codebooks to use (default all)")
    p.add_argument("--num-tokens", type=int, help="FlexTok: decode the first k tokens (default all)")
    p.add_argument("--max-error", type=float, default=0.05, help="KARL: the target error (mean absolute, [0, 1])")
    p.add_argument("--size", type=int, default=64, help="VQ tokenizers: image size in pixels")
    p.add_argument("--out", type=Path, required=True, help="output WAV or PNG file")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("train", help="run a training recipe (accelerate launch -m zoo train ... for many GPUs)")
    p.add_argument("recipe", nargs="?")
    p.add_argument("recipe_args", nargs=argparse.REMAINDER, help="arguments for the recipe")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("convert", help="convert an official checkpoint into a zoo folder")
    p.add_argument("source", help="a catalogue name (`zoo list --kind original`) or a converter: "
                                  + ", ".join(sorted(CONVERTERS)))
    p.add_argument("--checkpoint", type=Path, help="local original checkpoint (else downloaded for catalogue names)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--num-heads", type=int, help="attention heads, when not the standard size's")
    p.add_argument("--image-size", type=int, help="image size the model was trained at (token grid = size / 16)")
    p.add_argument("--vae-config", type=Path, help="FlexTok: the VAE's config.json (EPFL-VILAB/flextok_vae_c16), "
                                                   "which holds its scaling_factor")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("bench", help="run a benchmark from benchmarks/ (results to benchmarks/results/)")
    p.add_argument("name", help="one of: " + ", ".join(sorted(BENCHMARKS)))
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for the benchmark (e.g. --quick)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from zoo.utils.distributed import end_processes

    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    end_processes()  # under accelerate launch; not after a failure, where a barrier could wait forever
    return status


if __name__ == "__main__":
    sys.exit(main())
