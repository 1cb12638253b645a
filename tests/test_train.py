"""The shared training loop, through the vq-shapes recipe at toy size."""

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import free_port
from tokenizers_visual import VQModel
from zoo.cli import main as zoo_main
from zoo.train import RECIPES

TOY = ["--size", "32", "--width", "32", "--codebook-size", "64", "--batch-size", "2", "--restart-every", "2"]


def test_recipe_trains_logs_checkpoints_and_resumes(tmp_path):
    from zoo.train.loop import resumed_step

    out = tmp_path / "run"
    assert resumed_step(out) == 0
    assert zoo_main(["train", "vq-shapes", "--out", str(out), "--steps", "4", *TOY]) == 0
    assert resumed_step(out) == 4
    model = VQModel.from_pretrained(out / "model")
    assert model.config.codebook_size == 64
    log = (out / "train.log").read_text()
    assert "starting at step 0" in log and "dead codes restarted" in log and "done at step 4" in log
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 4 and {"loss", "l1", "lr", "steps_per_s"} <= set(metrics[-1])
    assert (out / "checkpoints" / "step_4" / "state.json").is_file()
    # running again with more steps resumes from the checkpoint instead of starting over
    assert zoo_main(["train", "vq-shapes", "--out", str(out), "--steps", "6", *TOY]) == 0
    assert "resuming from" in (out / "train.log").read_text()
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6


def test_ema_weights_are_what_is_saved(tmp_path):
    out = tmp_path / "ema"
    assert zoo_main(["train", "vq-shapes", "--out", str(out), "--steps", "3", "--ema", "0.5", *TOY]) == 0
    saved = VQModel.from_pretrained(out / "model")
    assert all(torch.isfinite(p).all() for p in saved.parameters())


def test_two_process_accelerate_launch(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "zoo", "train", "vq-shapes", "--out", str(out), "--steps", "3", *TOY]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in (out / "train.log").read_text()
    assert (out / "model" / "config.json").is_file()
    assert result.stdout.count("saved") == 1  # only the main process saves


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_takes_mixed_precision(recipe, capsys):
    with pytest.raises(SystemExit):
        zoo_main(["train", recipe, "--help"])
    assert "--mixed-precision {no,bf16,fp16}" in capsys.readouterr().out


def test_mixed_precision_reaches_the_loop(tmp_path, monkeypatch):
    # accelerate keeps one state (and so one mixed precision) per process, made by the first Accelerator: the
    # other tests here have already trained in float32, so the state is reset around this run, as
    # accelerate's own tests do, and the loop's autocast is watched from inside
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    autocast, seen = Accelerator.autocast, []

    @contextlib.contextmanager
    def watched(self, *args, **kwargs):
        with autocast(self, *args, **kwargs):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            yield

    monkeypatch.setattr(Accelerator, "autocast", watched)
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        assert zoo_main(["train", "vq-shapes", "--out", str(tmp_path / "bf16"), "--steps", "2",
                         "--mixed-precision", "bf16", *TOY]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert "'mixed_precision': 'bf16'" in (tmp_path / "bf16" / "train.log").read_text()


def _training_outputs():
    from tokenizers_audio.codec import CodecOutput
    from tokenizers_visual.flextok import FlexTokOutput
    from zoo.ar.speech import SpeechLMOutput

    half = torch.ones(2, 3, dtype=torch.bfloat16)
    return [FlexTokOutput(loss=half.sum(), keep=torch.tensor([1, 4]), ids=torch.zeros(2, 4, dtype=torch.long)),
            CodecOutput(audio=half, codes=torch.zeros(2, 8, 3, dtype=torch.long), commitment_loss=half.mean()),
            SpeechLMOutput(logits=half)]


@pytest.mark.parametrize("output", _training_outputs(), ids=lambda o: type(o).__name__)
def test_training_outputs_survive_mixed_precision(output):
    # under --mixed-precision, accelerate casts a model's outputs back to float32 by rebuilding them from a
    # dict of their fields; an output class with a second required field cannot be rebuilt so
    from accelerate.utils import convert_to_fp32

    converted = convert_to_fp32(output)
    assert type(converted) is type(output) and list(converted.keys()) == list(output.keys())
    for key, value in output.items():
        expected = torch.float32 if value.dtype == torch.bfloat16 else value.dtype
        assert converted[key].dtype == expected and torch.equal(converted[key].to(value.dtype), value)


def test_bad_settings():
    from zoo.train.loop import TrainConfig

    with pytest.raises(ValueError, match="max_steps and batch_size"):
        TrainConfig(output_dir="x", max_steps=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(output_dir="x", max_steps=1, mixed_precision="fp8")


def test_tokenize_then_train_the_ar_model(tmp_path):
    """zoo tokenize (Shapes and a folder of images) -> zoo train llamagen-shapes -> an ARImagePipeline."""
    from PIL import Image

    from pipelines import ARImagePipeline
    from zoo.data.tokens import TokenDataset

    torch.manual_seed(0)
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                 decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32)
    vq.save_pretrained(tmp_path / "vq")
    tokens = tmp_path / "shapes.safetensors"
    assert zoo_main(["tokenize", str(tmp_path / "vq"), "--num", "12", "--size", "32", "--out", str(tokens)]) == 0
    data = TokenDataset(tokens)
    assert len(data) == 12 and data.grid == (16, 16) and data.metadata["class_names"][0] == "circle"
    for cls in ("cats", "dogs"):
        (tmp_path / "mine" / cls).mkdir(parents=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "mine" / cls / "a.png")
    assert zoo_main(["tokenize", str(tmp_path / "vq"), "--data", str(tmp_path / "mine"), "--size", "16",
                     "--out", str(tmp_path / "mine.safetensors")]) == 0
    mine = TokenDataset(tmp_path / "mine.safetensors")
    assert mine.labels.tolist() == [0, 1] and mine.metadata["class_names"] == ["cats", "dogs"]

    out = tmp_path / "ar"
    assert zoo_main(["train", "llamagen-shapes", "--tokens", str(tokens), "--vq", str(tmp_path / "vq"), "--out",
                     str(out), "--steps", "3", "--batch-size", "4", "--hidden", "64", "--layers", "1",
                     "--heads", "2"]) == 0
    pipe = ARImagePipeline.from_pretrained(out / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert pipe(class_labels=["star"], num_images_per_prompt=2).images[0].size == (32, 32)

    # --init goes on from the trained pipeline (its size, not the size arguments), and refuses other tokens
    assert zoo_main(["train", "llamagen-shapes", "--tokens", str(tokens), "--vq", str(tmp_path / "vq"), "--out",
                     str(tmp_path / "ar2"), "--steps", "1", "--batch-size", "4", "--init", str(out / "pipeline")]) == 0
    continued = ARImagePipeline.from_pretrained(tmp_path / "ar2" / "pipeline").transformer
    assert continued.config.hidden_size == 64 and continued.config.num_layers == 1
    with pytest.raises(SystemExit, match="does not fit these tokens"):
        zoo_main(["train", "llamagen-shapes", "--tokens", str(tmp_path / "mine.safetensors"), "--vq",
                  str(tmp_path / "vq"), "--out", str(tmp_path / "ar3"), "--steps", "1", "--init", str(out / "pipeline")])


def test_learning_rate_schedules():
    from zoo.train.loop import TrainConfig, _lr_factor

    warm = TrainConfig(output_dir="x", max_steps=110, warmup_steps=10, lr_schedule="cosine")
    assert _lr_factor(0, warm) == pytest.approx(0.1) and _lr_factor(10, warm) == pytest.approx(1.0)
    assert _lr_factor(60, warm) == pytest.approx(0.5) and _lr_factor(110, warm) == pytest.approx(0.0)
    assert _lr_factor(50, TrainConfig(output_dir="x", max_steps=100)) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(output_dir="x", max_steps=1, lr_schedule="step")


def test_batches_grouped_by_length(tmp_path):
    """With `lengths`, every epoch still visits each item once, but a batch holds items of similar length,
    so it needs far less padding than random batches."""
    from zoo.train.loop import TrainConfig, train

    sizes = torch.randint(1, 400, (256,), generator=torch.Generator().manual_seed(0)).tolist()
    data = [{"x": torch.ones(n), "index": i} for i, n in enumerate(sizes)]

    def collate(items):
        return {"x": torch.nn.utils.rnn.pad_sequence([it["x"] for it in items], batch_first=True),
                "index": [it["index"] for it in items]}

    def padded_share(lengths):
        seen = []

        def loss_fn(model, batch):
            seen.append(batch["index"])
            return model(batch["x"].sum(1, keepdim=True) * 0).mean(), {}

        config = TrainConfig(output_dir=str(tmp_path / f"run{len(lengths or ())}"), max_steps=32, batch_size=8,
                             checkpoint_every=100)
        train(torch.nn.Linear(1, 1), data, loss_fn, config, collate_fn=collate, lengths=lengths)
        assert sorted(i for batch in seen for i in batch) == list(range(256))  # one epoch: each item once
        real = sum(sizes[i] for batch in seen for i in batch)
        return 1 - real / sum(8 * max(sizes[i] for i in batch) for batch in seen)

    grouped, shuffled = padded_share(sizes), padded_share(None)
    assert shuffled > 0.3 and grouped < shuffled / 3, (grouped, shuffled)  # 43% against 9% here
    with pytest.raises(ValueError, match="positive size for each of the 256 items"):
        padded_share(sizes[:-1])
