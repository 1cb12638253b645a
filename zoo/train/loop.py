"""The training loop every zoo recipe runs: accelerate, mixed precision, EMA, checkpoints, logs.

The same call trains on one CPU, on several GPUs, or on several machines: run the recipe with
`zoo train NAME ...` or `accelerate launch --multi_gpu --num_processes N -m zoo train NAME ...` (DDP
on GPUs, or gloo between CPU processes on a machine without GPUs; FSDP through `accelerate config`). A recipe provides the model, the dataset and a loss
function `loss_fn(model, batch) -> (loss, {name: float})`; the loop does the rest:

- AdamW with linear warm-up, gradient clipping, optional bf16/fp16 autocast (`mixed_precision`);
- an EMA of the weights (diffusers' `EMAModel`) that is what gets saved at the end, if enabled;
- `checkpoints/step_N` every `checkpoint_every` steps (accelerate state + EMA + step), and resume
  from the newest one when the recipe is run again with the same `output_dir`;
- a progress bar, and a log a person can read (`train.log`) next to `metrics.jsonl`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zoo.utils.distributed import cpu_processes
from zoo.utils.io import atomic_directory


@dataclass
class TrainConfig:
    output_dir: str
    max_steps: int
    batch_size: int = 32  # per process
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # after warm-up: "constant" or "cosine" (to 0 at max_steps)
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    seed: int = 0
    num_workers: int = 0
    extra: dict = field(default_factory=dict)  # recipe-specific settings, recorded in the log

    def __post_init__(self):
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError(f"max_steps and batch_size must be >= 1, got {self.max_steps}, {self.batch_size}.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; pass 'constant' or 'cosine'.")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision={self.mixed_precision!r}; pass 'no', 'bf16' or 'fp16'.")


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def _sampler(dataset, lengths, config: TrainConfig, num_processes: int, rank: int):
    """This process's share of every epoch: shuffled, or grouped by `lengths` when given."""
    if lengths is None:
        return torch.utils.data.DistributedSampler(dataset, num_replicas=num_processes, rank=rank, shuffle=True,
                                                   seed=config.seed, drop_last=True)
    from transformers.trainer_pt_utils import DistributedLengthGroupedSampler

    lengths = [int(n) for n in lengths]
    if len(lengths) != len(dataset) or min(lengths, default=0) < 1:
        raise ValueError(f"lengths must give a positive size for each of the {len(dataset)} items, got "
                         f"{len(lengths)} values (smallest {min(lengths, default=None)}).")
    return DistributedLengthGroupedSampler(config.batch_size, lengths=lengths, num_replicas=num_processes, rank=rank,
                                           seed=config.seed, drop_last=True)


def _batches(loader, sampler_epoch_fn):
    epoch = 0
    while True:
        sampler_epoch_fn(epoch)
        yield from loader
        epoch += 1


def _latest_checkpoint(folder: Path) -> tuple[Path | None, dict]:
    """The newest complete checkpoint under `folder` and its state.json ({"step", "schedule"}), or
    (None, {}) when there is none."""
    steps = sorted((int(p.name.split("_")[1]), p) for p in folder.glob("step_*") if (p / "state.json").is_file())
    if not steps:
        return None, {}
    return steps[-1][1], json.loads((steps[-1][1] / "state.json").read_text())


def resumed_step(output_dir) -> int:
    """The step `train` will resume from in `output_dir` (0 for a fresh run): for a loss whose behaviour
    depends on the step, which the step hooks only tell it after the first step."""
    return _latest_checkpoint(Path(output_dir) / "checkpoints")[1].get("step", 0)


def train(model, dataset, loss_fn, config: TrainConfig, *, hooks=None, collate_fn=None, lengths=None):
    """Train `model` on `dataset`; returns the trained model (EMA weights, if enabled), unwrapped.

    hooks: optional callables `hook(step, model, accelerator, log)` run on every process after each
    step (e.g. dead-code restarts, periodic evaluation); `log(message)` appends to train.log.
    lengths: optional size of every item (e.g. frames of an utterance). Batches then hold items of
    similar length, which cuts the padding a collate adds: transformers' `DistributedLengthGroupedSampler`,
    as `Trainer(group_by_length=True)` (shuffled, then sorted within mega-batches of 50 batches).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.training_utils import EMAModel

    out = Path(config.output_dir)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu_processes())
    set_seed(config.seed, device_specific=True)
    sampler = _sampler(dataset, lengths, config, accelerator.num_processes, accelerator.process_index)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=config.num_workers, collate_fn=collate_fn)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr, betas=config.betas,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, config))
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = EMAModel(accelerator.unwrap_model(model).parameters(), decay=config.ema_decay) if config.ema_decay else None

    step, checkpoints = 0, out / "checkpoints"
    resume, state = _latest_checkpoint(checkpoints)
    if resume is not None:
        accelerator.load_state(str(resume))
        step = state["step"]
        schedule.load_state_dict(state["schedule"])
        if ema is not None:
            ema.load_state_dict(torch.load(resume / "ema.pt", weights_only=True))
    log = _Log(out, accelerator.is_main_process)
    log.line(f"{'resuming from ' + str(resume) if resume else 'starting'} at step {step}; "
             f"{accelerator.num_processes} process(es) on {accelerator.device}; "
             f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; config {asdict(config)}")

    batches = _batches(loader, sampler.set_epoch)
    bar = tqdm(total=config.max_steps, initial=step, desc="train", disable=not accelerator.is_main_process)
    window, started = [], time.perf_counter()
    model.train()
    while step < config.max_steps:
        batch = next(batches)
        with accelerator.autocast():
            loss, metrics = loss_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate.")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if config.grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        step += 1
        if ema is not None:
            ema.step(accelerator.unwrap_model(model).parameters())
        for hook in hooks or ():
            hook(step, model, accelerator, log.line)
        window.append({"loss": loss.item(), **metrics})
        bar.update(1)
        if step % config.log_every == 0 or step == config.max_steps:
            means = {k: sum(m[k] for m in window) / len(window) for k in window[0]}
            log.metrics(step, {**means, "lr": schedule.get_last_lr()[0],
                               "steps_per_s": len(window) / (time.perf_counter() - started)})
            bar.set_postfix(loss=f"{means['loss']:.4f}")
            window, started = [], time.perf_counter()
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            _save_checkpoint(accelerator, checkpoints / f"step_{step}", step, schedule, ema, config.keep_checkpoints)
    bar.close()
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(model)
    if ema is not None:
        ema.copy_to(trained.parameters())
    log.line(f"done at step {step}")
    return trained.eval()


def _save_checkpoint(accelerator, folder: Path, step, schedule, ema, keep):
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        if ema is not None:
            torch.save(ema.state_dict(), folder / "ema.pt")
        # written last: a checkpoint without state.json is incomplete and never resumed from
        (folder / "state.json").write_text(json.dumps({"step": step, "schedule": schedule.state_dict()}))
        old = sorted(folder.parent.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]
        for stale in old:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


class _Log:
    """train.log (readable lines) and metrics.jsonl (one JSON object per logged step), main process only."""

    def __init__(self, folder: Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            folder.mkdir(parents=True, exist_ok=True)
            self.text, self.jsonl = folder / "train.log", folder / "metrics.jsonl"

    def line(self, message: str):
        if self.enabled:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.text, "a") as f:
                f.write(f"{stamp} {message}\n")

    def metrics(self, step: int, values: dict):
        if self.enabled:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
            self.line(f"step {step}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in values.items()))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)


def add_mixed_precision(parser) -> None:
    """The `--mixed-precision` option every recipe takes (TrainConfig.mixed_precision). On a CPU with
    AVX512-BF16 or AMX, bf16 trains about 1.7x faster at the same loss (BENCHMARKS.md, "Training speed")."""
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"],
                        help="autocast precision of the forward pass (bf16 is faster on recent CPUs and GPUs)")


def add_group_by_length(parser) -> None:
    """The `--group-by-length / --no-group-by-length` option of recipes over items of varied length
    (utterances): batches of similar length (`train(..., lengths=...)`) waste less compute on padding."""
    import argparse

    parser.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                        help="batch items of similar length together (less padding); --no-group-by-length draws "
                             "batches at random")


def cosine_config(args, warmup: int = 300, **overrides) -> TrainConfig:
    """The schedule most recipes share, from their parsed arguments (out, steps, batch_size, lr, seed, and
    mixed_precision where the recipe has `add_mixed_precision`): linear warm-up over at most `warmup` steps
    (10% of a short run), cosine decay to 0, a log line every 50 steps and a checkpoint every 250;
    `overrides` set any other TrainConfig field."""
    return TrainConfig(output_dir=args.out, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       **{"warmup_steps": min(warmup, args.steps // 10), "lr_schedule": "cosine",
                          "mixed_precision": getattr(args, "mixed_precision", "no"),
                          "log_every": min(50, args.steps), "checkpoint_every": min(250, args.steps),
                          "seed": args.seed, "extra": vars(args), **overrides})


def is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState(cpu=cpu_processes()).is_main_process


def save_on_main(model, folder) -> None:
    """Save the trained model atomically (any diffusers model) from the main process only."""
    if is_main_process():
        with atomic_directory(folder) as tmp:
            model.save_pretrained(tmp)
        print(f"saved {folder}")


def load_to_continue(source: str, model_class: type, component: str | None = None, wanted: dict | None = None,
                     against: str = "this run (its value, this run's)", advice: str = ""):
    """A trained model (folder or built-in name) to go on training: checked to be a `model_class`, in float32
    (built-ins are stored in float16). A recipe's `--init`. `component` names the model inside a pipeline
    (e.g. "lm" of a CodecTTSPipeline), for recipes that ship pipelines. `wanted` ({config key: value}) are
    the settings this run needs the model to have (lists and tuples compare alike, as a config read back
    from JSON holds lists); any that differ stop the run with `against` and `advice` in the message."""
    import zoo

    model = zoo.load(source)
    if component is not None and hasattr(model, "components"):
        model = model.components.get(component, model)
    if not isinstance(model, model_class):
        raise SystemExit(f"--init {source} is a {type(model).__name__}, not a {model_class.__name__}.")
    wrong = {k: (model.config[k], v) for k, v in (wanted or {}).items() if _plain(model.config[k]) != _plain(v)}
    if wrong:
        raise SystemExit(f"--init {source} does not fit {against}: {wrong}; {advice}")
    return model.float()


def train_only(model, prefixes: tuple[str, ...]):
    """Freeze every parameter whose name does not start with one of `prefixes` (a recipe's
    `--decoder-only`); the training loop's optimizer holds only the parameters left trainable."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
    return model


def _plain(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value
