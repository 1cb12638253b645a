"""Recipe `token-shuffle-shapes`: Token-Shuffle text-to-image on Shapes captions.

    zoo tokenize vq-shapes --size 128 --num 10000 --out runs/shapes128.tokens.safetensors   # 32x32 tokens
    zoo train token-shuffle-shapes --tokens runs/shapes128.tokens.safetensors --vq vq-shapes --window 2 \\
        --out runs/token-shuffle-2

One transformer reads the caption (word tokens of zoo's caption tokenizer, left-padded, then <soi>)
and the image windows; next-window cross-entropy over every image token. 10% of captions are
replaced by the empty prompt so that the model also learns the unconditional row of CFG. `--window 1`
is the plain AR baseline with the same layers. The result is a `TokenShufflePipeline` in
`<out>/pipeline`.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from zoo.data.tokens import TokenDataset
from zoo.train.llamagen_shapes import add_arguments, train_config
from zoo.train.loop import is_main_process, train


class CaptionedTokens(torch.utils.data.Dataset):
    """Items {"text_ids", "text_mask", "ids" [h, w]} from a token file with captions."""

    def __init__(self, data: TokenDataset, tokenizer, max_text_tokens: int, caption_dropout: float = 0.1, seed: int = 0):
        from zoo.data.text import encode_prompts

        if data.captions is None:
            raise ValueError("the token file has no captions; make it with `zoo tokenize` from Shapes, or from a "
                             "folder with a .txt caption beside each image.")
        self.data = data
        self.text_ids, self.text_mask = encode_prompts(tokenizer, data.captions, max_text_tokens)
        self.empty_ids, self.empty_mask = encode_prompts(tokenizer, [""], max_text_tokens)
        # which items train the unconditional row: fixed per item, so a resumed run sees the same data
        self.dropped = torch.rand(len(data), generator=torch.Generator().manual_seed(seed)) < caption_dropout

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        text_ids, text_mask = (self.empty_ids[0], self.empty_mask[0]) if self.dropped[i] else \
            (self.text_ids[i], self.text_mask[i])
        return {"text_ids": text_ids, "text_mask": text_mask, "ids": self.data.ids[i]}


def window_loss(model, batch):
    logits = model(batch["text_ids"], batch["text_mask"], batch["ids"])  # [B, T, V], window order
    target = model.grid_to_windows(batch["ids"])
    loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
    return loss, {"accuracy": (logits.argmax(-1) == target).float().mean().item()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zoo train token-shuffle-shapes", description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--window", type=int, default=2, help="s: s x s tokens per AR step (1 = plain AR)")
    p.add_argument("--max-text-tokens", type=int, default=16, help="prompt prefix length, <soi> included")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    args = p.parse_args(argv)

    import zoo
    from pipelines import TokenShufflePipeline
    from zoo.ar.token_shuffle import TokenShuffleTransformer
    from zoo.data.text import caption_tokenizer

    vq = zoo.load(args.vq)
    tokenizer = caption_tokenizer()
    tokens = TokenDataset(args.tokens)
    data = CaptionedTokens(tokens, tokenizer, args.max_text_tokens, args.caption_dropout, args.seed)
    model = TokenShuffleTransformer(
        text_vocab_size=len(tokenizer), codebook_size=vq.config.codebook_size, grid_size=tokens.grid,
        window=args.window, max_text_tokens=args.max_text_tokens, hidden_size=args.hidden, num_layers=args.layers,
        num_heads=args.heads, dropout=args.dropout)
    model = train(model, data, window_loss, train_config(args, args.out, args.steps))
    if is_main_process():
        TokenShufflePipeline(transformer=model, tokenizer=tokenizer, vqvae=vq).save_pretrained(f"{args.out}/pipeline")
        print(f"saved {args.out}/pipeline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
