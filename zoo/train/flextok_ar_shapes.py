"""Recipe `flextok-ar-shapes`: class-conditional AR generation over FlexTok's 1D tokens.

    zoo tokenize runs/flextok-shapes/model --num 24000 --out runs/flextok-train.tokens.safetensors
    zoo train flextok-ar-shapes --tokens runs/flextok-train.tokens.safetensors --vq runs/flextok-shapes/model \\
        --out runs/flextok-ar

FlexTok's AR models are not released; the paper describes a Llama/GPT-style next-token model over the
FSQ vocabulary with a class token, and the community reimplementation (deboradum/ml-flextok-ar-generation)
is LlamaGen's GPT with 1D positions and 10% class dropout. zoo trains exactly that with the shared
`ARTransformer` (1D RoPE, the class token's RoPE zeroed as LlamaGen's) and LlamaGen's optimisation
(see `llamagen-shapes`). Because the tokens are ordered coarse to fine, generating only the first k
tokens and decoding that prefix is a complete, cheaper image; the model is trained on full sequences.
The result is saved as a `FlexTokPipeline` (tokenizer + transformer + class names) in `<out>/pipeline`.
"""

from __future__ import annotations

import argparse

from zoo.data.tokens import TokenDataset
from zoo.train.llamagen_shapes import add_arguments, build_model, next_token_loss, train_config
from zoo.train.loop import is_main_process, train


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zoo train flextok-ar-shapes", description=__doc__.splitlines()[0])
    add_arguments(p, default_steps=6000)
    args = p.parse_args(argv)

    import zoo
    from pipelines import FlexTokPipeline

    tokenizer = zoo.load(args.vq)
    if isinstance(tokenizer, FlexTokPipeline):
        tokenizer = tokenizer.tokenizer
    if not isinstance(tokenizer, zoo.FlexTok):
        raise SystemExit(f"--vq {args.vq} is a {type(tokenizer).__name__}; pass the FlexTok tokenizer that made "
                         "the tokens.")
    data = TokenDataset(args.tokens)
    if len(data.grid) != 1 or data.grid[0] != tokenizer.num_registers:
        raise SystemExit(f"{args.tokens} holds ids of shape {data.grid}, not FlexTok sequences of "
                         f"{tokenizer.num_registers} tokens; make it with `zoo tokenize {args.vq}`.")
    model = build_model(data, args, tokenizer.codebook_size, grid_size=None, seq_len=tokenizer.num_registers,
                        position_embedding="rope_1d")
    model = train(model, data, next_token_loss, train_config(args, args.out, args.steps))
    if is_main_process():
        pipe = FlexTokPipeline(tokenizer=tokenizer, transformer=model, class_names=data.metadata.get("class_names"))
        pipe.save_pretrained(f"{args.out}/pipeline")
        print(f"saved {args.out}/pipeline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
