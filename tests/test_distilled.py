"""The DD1 student: built from a teacher, causal, flags data and noise, saves and loads."""

import pytest
import torch

from tests.conftest import tiny_transformer
from zoo.ar.distilled import DDTransformer


@pytest.fixture(scope="module")
def teacher():
    return tiny_transformer(class_dropout_prob=0.1)


def test_student_starts_from_the_teacher(teacher):
    student = DDTransformer.from_teacher(teacher, codebook_dim=4)
    for name in ("class_embedding", "blocks", "norm", "head"):
        theirs, ours = getattr(teacher, name).state_dict(), getattr(student.backbone, name).state_dict()
        assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    assert student.backbone.config.input_dim == 4 and student.backbone.config.class_dropout_prob == 0
    assert not hasattr(student.backbone, "token_embedding")
    assert not any(k.startswith("_") for k in student.config.backbone_config)  # no teacher path saved


def test_outputs_are_causal_and_depend_on_the_data_flag(teacher):
    student = DDTransformer.from_teacher(teacher, codebook_dim=4).eval()
    x, labels = torch.randn(2, 16, 4), torch.tensor([1, 2])
    codes, logits = student(x, labels, num_data=0)
    assert codes.shape == (2, 16, 4) and logits.shape == (2, 16, 64) and codes.dtype == torch.float32
    later = x.clone()
    later[:, 9:] = torch.randn(2, 7, 4)
    codes2, logits2 = student(later, labels, num_data=0)
    torch.testing.assert_close(codes2[:, :9], codes[:, :9])  # token j sees inputs <= j only
    torch.testing.assert_close(logits2[:, :9], logits[:, :9])
    flagged, _ = student(x, labels, num_data=torch.tensor([0, 5]))
    torch.testing.assert_close(flagged[0], codes[0])
    assert not torch.allclose(flagged[1], codes[1])


def test_save_and_load(teacher, tmp_path):
    student = DDTransformer.from_teacher(teacher, codebook_dim=4).eval()
    student.save_pretrained(tmp_path / "dd")
    loaded = DDTransformer.from_pretrained(tmp_path / "dd").eval()
    x = torch.randn(1, 16, 4)
    torch.testing.assert_close(loaded(x, torch.tensor([3]), 4)[0], student(x, torch.tensor([3]), 4)[0])


def test_bad_inputs(teacher):
    student = DDTransformer.from_teacher(teacher, codebook_dim=4)
    with pytest.raises(ValueError, match="x must be"):
        student(torch.randn(1, 16, 5), torch.tensor([0]))
    with pytest.raises(ValueError, match="num_classes >= 1"):
        DDTransformer(backbone_config=dict(vocab_size=8, hidden_size=32, num_layers=1, num_heads=2, seq_len=4))
    with pytest.raises(ValueError, match="token model"):
        DDTransformer.from_teacher(DDTransformer.from_teacher(teacher, 4).backbone, 4)


def tiny_pipeline(teacher, **kwargs):
    from pipelines import DistilledPipeline
    from tokenizers_visual import VQModel

    torch.manual_seed(0)
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                 decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32).eval()
    student = DDTransformer.from_teacher(teacher, codebook_dim=4).eval()
    pipe = DistilledPipeline(student=student, vqvae=vq, class_names=[f"c{i}" for i in range(10)], **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_one_and_two_step_sampling(teacher):
    pipe = tiny_pipeline(teacher, split_position=5, second_step_position=8)
    seen = []
    for steps in (1, 2):
        images = pipe(class_labels=["c1", 4], num_inference_steps=steps, output_type="pt",
                      generator=torch.Generator().manual_seed(0),
                      callback_on_step_end=lambda p, i, t, kw: seen.append(kw["codes"]) or {}).images
        assert images.shape == (2, 3, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert len(seen) == 3  # one callback per pass
    codebook = pipe.vqvae.codebook
    for codes in seen:  # tokens before split_position are codewords
        assert (codes[:, :5, None] - codebook).abs().sum(-1).min(-1).values.max() == 0
    a = pipe(class_labels=[1, 4], output_type="pt", generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
    b = pipe(class_labels=[4], output_type="pt", generator=torch.Generator().manual_seed(1))
    # float rounding only: on some CPUs a 2-row matmul rounds unlike a 1-row one (MKL on a Zen-1 EPYC: 1.1e-6)
    torch.testing.assert_close(a.images[1:], b.images, atol=1e-5, rtol=0)


def test_second_step_keeps_the_first_tokens(teacher):
    pipe = tiny_pipeline(teacher, split_position=16, second_step_position=8)
    noise, labels = torch.randn(2, 16, 4), torch.tensor([0, 1])
    first = pipe.denoise(noise, labels, [0])
    both = pipe.denoise(noise, labels, [0, 8])
    torch.testing.assert_close(both[:, :8], first[:, :8])


def test_pipeline_round_trip_and_errors(teacher, tmp_path):
    import zoo
    from pipelines import DistilledPipeline

    pipe = tiny_pipeline(teacher)
    pipe.save_pretrained(tmp_path / "dd")
    loaded = zoo.load(str(tmp_path / "dd"))
    assert type(loaded) is DistilledPipeline and loaded.config.split_position == 5  # 80/256 of 16
    kwargs = lambda: dict(class_labels=[2], output_type="pt", generator=torch.Generator().manual_seed(3))  # noqa: E731
    torch.testing.assert_close(loaded(**kwargs()).images, pipe(**kwargs()).images)
    with pytest.raises(ValueError, match="num_inference_steps must be 1 or 2"):
        pipe(class_labels=[1], num_inference_steps=3)
    with pytest.raises(ValueError, match="unknown class name"):
        pipe(class_labels=["dog"])
    with pytest.raises(ValueError, match="split_position must lie"):
        tiny_pipeline(teacher, split_position=17)


def test_recipe_makes_pairs_and_trains_a_student(teacher, tmp_path):
    from pipelines import ARImagePipeline, DistilledPipeline
    from tokenizers_visual import VQModel
    from zoo.cli import main as zoo_main

    torch.manual_seed(0)
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1],
                 decoder_ch_mult=[1, 1], num_res_blocks=1, z_channels=32).eval()
    ARImagePipeline(transformer=teacher, vqvae=vq).save_pretrained(tmp_path / "teacher")
    for naive in (False, True):
        out = tmp_path / ("naive" if naive else "dd")
        args = ["train", "dd-shapes", "--teacher", str(tmp_path / "teacher"), "--out", str(out), "--pairs", "6",
                "--steps", "2", "--batch-size", "3", "--flow-steps", "4", "--split", "6", "--second-step", "8"]
        assert zoo_main(args + (["--naive"] if naive else [])) == 0
        pipe = DistilledPipeline.from_pretrained(out / "pipeline")
        assert pipe.config.noise_input is not naive and pipe.config.split_position == 6
        pipe.set_progress_bar_config(disable=True)
        assert pipe(class_labels=[1], num_inference_steps=2, output_type="pt").images.shape == (1, 3, 8, 8)
    assert len(list((tmp_path / "dd" / "pairs").glob("pairs-*.safetensors"))) == 1


def test_distilled_benchmark_on_tiny_pipelines(teacher, tmp_path, monkeypatch):
    """benchmarks/distilled.py end to end on random 32 px pipelines (the numbers mean nothing)."""
    import json

    from benchmarks import common, distilled
    from pipelines import ARImagePipeline, DistilledPipeline
    from tests.conftest import tiny_transformer
    from tokenizers_visual import VQModel

    torch.manual_seed(0)
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1, 1],
                 decoder_ch_mult=[1, 1, 1], num_res_blocks=1, z_channels=32).eval()
    big = tiny_transformer(grid_size=(8, 8))
    ARImagePipeline(transformer=big, vqvae=vq).save_pretrained(tmp_path / "teacher")
    for name, noise_input in (("dd", True), ("naive", False)):
        DistilledPipeline(student=DDTransformer.from_teacher(big, 4), vqvae=vq,
                          noise_input=noise_input).save_pretrained(tmp_path / name)
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    assert distilled.main(["--teacher", str(tmp_path / "teacher"), "--dd", str(tmp_path / "dd"), "--naive",
                           str(tmp_path / "naive"), "--images", "20", "--latency-repeats", "1", "--quick"]) == 0
    result = json.loads((tmp_path / "distilled.quick.json").read_text())
    assert [r["steps"] for r in result["rows"]] == [64, 1, 2, 1] and result["rows"][0]["speedup"] == 1.0
    assert len(result["claims"]) == 4 and result["rows"][0]["generation_speedup"] == 1.0
    assert all(r["generation_images_per_s"] >= r["images_per_s"] and r["latency_s"] > 0 for r in result["rows"])


def test_teacher_involved_mode(teacher):
    from pipelines import DistilledPipeline

    pipe = tiny_pipeline(teacher, split_position=4, second_step_position=10)
    with pytest.raises(ValueError, match="needs the pipeline's teacher"):
        pipe(class_labels=[1], teacher_start=4)
    pipe = DistilledPipeline(student=pipe.student, vqvae=pipe.vqvae, teacher=teacher, split_position=4,
                             second_step_position=10)
    pipe.set_progress_bar_config(disable=True)
    passes = []
    out = pipe(class_labels=[1, 2], teacher_start=4, output_type="pt", generator=torch.Generator().manual_seed(0),
               callback_on_step_end=lambda p, i, t, kw: passes.append(kw["codes"]) or {})
    assert out.images.shape == (2, 3, 8, 8) and len(passes) == 2
    first, last = passes
    torch.testing.assert_close(last[:, :4], first[:, :4])  # the teacher kept the first 4 tokens
    assert (last[:, :10, None] - pipe.vqvae.codebook).abs().sum(-1).min(-1).values.max() < 1e-6  # teacher codewords
    with pytest.raises(ValueError, match="teacher_start must lie"):
        pipe(class_labels=[1], teacher_start=10)


def test_builtin_dd_shapes_generates_offline(offline):
    import zoo
    from pipelines import DistilledPipeline
    from weights_registry import get_entry

    entry = get_entry("dd-shapes")
    assert entry.kind == "builtin" and (entry.path / "README.md").is_file()
    pipe = zoo.load("dd-shapes")
    assert type(pipe) is DistilledPipeline and pipe.student.dtype == torch.float32
    assert pipe.config.class_names[0] == "circle" and pipe.config.noise_input
    one, two = (pipe(class_labels=["star"], num_inference_steps=n, output_type="np",
                     generator=torch.Generator().manual_seed(0)).images for n in (1, 2))
    assert one.shape == two.shape == (1, 64, 64, 3)
