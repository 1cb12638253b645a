"""Coarse-to-fine prediction: the cluster table, the refiner's cluster mask, CTFPipeline conventions."""

import pytest
import torch
from diffusers import DiffusionPipeline

import zoo
from pipelines import CTFPipeline
from tests.conftest import tiny_transformer, tiny_vq, trace_compiled_path
from tokenizers_visual import CodeClusters, VQModel
from tokenizers_visual.clusters import kmeans
from zoo.ar.sampling import logits_to_probs, sample_from_probs

NAMES = [f"class{i}" for i in range(10)]


def tiny_ctf(mask_fine_logits=True, k=8):
    vq = tiny_vq()
    clusters = CodeClusters.fit(vq.codebook, k)
    transformer = tiny_transformer(vocab_size=k)
    refiner = tiny_transformer(vocab_size=64, input_vocab_size=k, attention="bidirectional")
    pipe = CTFPipeline(transformer=transformer, refiner=refiner, clusters=clusters, vqvae=vq, class_names=NAMES,
                       mask_fine_logits=mask_fine_logits)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_ctf()


def test_kmeans_table_is_consistent_with_the_codebook():
    codebook = torch.randn(300, 8)
    clusters = CodeClusters.fit(codebook, 16, seed=1)
    table = clusters.cluster_of_code
    assert table.shape == (300,) and clusters.cluster_sizes().sum() == 300 and (clusters.cluster_sizes() > 0).all()
    # every code sits in the cluster of its nearest centroid (a converged Lloyd step)
    points = torch.nn.functional.normalize(codebook, dim=-1).double()
    centroids = torch.stack([points[table == c].mean(0) for c in range(16)])
    assert torch.equal(torch.cdist(points, centroids).argmin(1), table)
    assert torch.equal(clusters.member_mask.sum(0), torch.ones(300, dtype=torch.long))
    assert torch.equal(CodeClusters.fit(codebook, 16, seed=1).cluster_of_code, table)  # deterministic


def test_kmeans_separates_obvious_groups():
    centres = torch.eye(4) * 10
    points = torch.cat([centres[i] + 0.01 * torch.randn(25, 4) for i in range(4)])
    labels = kmeans(points, 4)
    assert all(len(set(labels[25 * i:25 * (i + 1)].tolist())) == 1 for i in range(4))
    assert len(set(labels.tolist())) == 4


def test_random_clusters_are_balanced():
    clusters = CodeClusters.fit(torch.randn(64, 4), 8, method="random")
    assert torch.equal(clusters.cluster_sizes(), torch.full((8,), 8))
    assert clusters.config.method == "random"


def test_masked_refiner_puts_no_probability_outside_the_cluster(pipe):
    coarse = torch.randint(0, 8, (3, 16))
    logits = pipe.fine_logits(coarse, torch.tensor([0, 1, 2]))
    probs = torch.softmax(logits, -1)
    outside = ~pipe.clusters.member_mask[coarse]
    assert probs[outside].max() == 0 and torch.allclose(probs.sum(-1), torch.ones(3, 16))
    unmasked = tiny_ctf(mask_fine_logits=False)
    assert (torch.softmax(unmasked.fine_logits(coarse, torch.tensor([0, 1, 2])), -1)[outside] > 0).all()


def test_members_list_each_cluster_in_ascending_order():
    clusters = CodeClusters.fit(torch.randn(300, 8), 16, seed=1)
    ids, valid = clusters.members()
    assert ids.shape == (16, int(clusters.cluster_sizes().max())) and torch.equal(valid.sum(1), clusters.cluster_sizes())
    for c in range(16):
        assert torch.equal(ids[c][valid[c]], torch.nonzero(clusters.cluster_of_code == c).flatten())


def test_member_logits_equal_the_masked_full_logits():
    clusters = CodeClusters.fit(torch.randn(300, 8), 16, seed=1)
    hidden, weight = torch.randn(2, 5, 12), torch.randn(300, 12)
    coarse = torch.randint(0, 16, (2, 5))
    logits, ids = clusters.member_logits(hidden, weight, coarse)
    full = clusters.restrict_logits((hidden @ weight.T), coarse)
    padding = ~clusters.members()[1][coarse]
    assert torch.allclose(logits[~padding], full.gather(-1, ids)[~padding], atol=1e-5)
    assert torch.isinf(logits[padding]).all() and (full.isfinite().sum(-1) == (~padding).sum(-1)).all()
    with pytest.raises(ValueError, match="head_weight"):
        clusters.member_logits(hidden, weight[:-1], coarse)
    with pytest.raises(ValueError, match="shape"):
        clusters.member_logits(hidden, weight, coarse[:, :-1])
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        clusters.member_logits(hidden, weight, coarse + 16)


@pytest.mark.parametrize("top_k", [0, 3])
def test_masked_sampling_draws_what_the_full_masked_logits_would(top_k):
    pipe = tiny_ctf()
    torch.nn.init.normal_(pipe.refiner.head.weight)  # the tiny refiner's head starts at zero
    coarse, labels = torch.randint(0, 8, (4, 16)), torch.tensor([0, 1, 2, 3])
    fast = pipe.sample_fine(coarse, labels, 1.1, top_k, [torch.Generator().manual_seed(i) for i in range(4)])
    probs = logits_to_probs(pipe.fine_logits(coarse, labels), 1.1, top_k, 1.0)
    slow = sample_from_probs(probs, [torch.Generator().manual_seed(i) for i in range(4)])
    assert torch.equal(fast, slow)


def test_generated_tokens_fall_in_their_clusters(pipe):
    seen = {}

    def keep_coarse(p, i, t, kwargs):
        seen["coarse"] = kwargs["tokens"]
        return {}

    captured = {}
    decode = pipe.vqvae.decode
    pipe.vqvae.decode = lambda ids: captured.setdefault("fine", ids) is not None and decode(ids)
    try:
        pipe(class_labels=[1, 2], generator=torch.Generator().manual_seed(0), callback_on_step_end=keep_coarse)
    finally:
        pipe.vqvae.decode = decode
    assert torch.equal(pipe.clusters.coarse(captured["fine"].flatten(1)), seen["coarse"])


def test_seeded_generation_is_reproducible_and_per_image(pipe):
    a = pipe(class_labels=["class3", 5], output_type="pt", generator=torch.Generator().manual_seed(0)).images
    b = pipe(class_labels=["class3", 5], output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, b)
    gens = [torch.Generator().manual_seed(s) for s in (4, 5)]
    pair = pipe(class_labels=[3, 5], output_type="pt", generator=gens).images
    single = pipe(class_labels=[5], output_type="pt", generator=torch.Generator().manual_seed(5)).images
    torch.testing.assert_close(pair[1:], single, atol=1e-6, rtol=0)


def test_compiled_stage_1_gives_the_eager_images(pipe, monkeypatch):
    trace_compiled_path(monkeypatch, pipe.transformer)
    eager = pipe(class_labels=[3, 5], output_type="pt", generator=torch.Generator().manual_seed(2)).images
    compiled = pipe(class_labels=[3, 5], output_type="pt", generator=torch.Generator().manual_seed(2), compile=True)
    assert torch.equal(eager, compiled.images) and pipe.transformer._compiled_decode is not None


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ctf")
    assert (tmp_path / "ctf" / "clusters" / "diffusion_pytorch_model.safetensors").is_file()
    for loaded in (CTFPipeline.from_pretrained(tmp_path / "ctf"), zoo.load(str(tmp_path / "ctf")),
                   DiffusionPipeline.from_pretrained(tmp_path / "ctf")):
        assert type(loaded) is CTFPipeline and loaded.config.mask_fine_logits is True
        assert torch.equal(loaded.clusters.cluster_of_code, pipe.clusters.cluster_of_code)
        loaded.set_progress_bar_config(disable=True)
        def kwargs():
            return dict(class_labels=[4], output_type="pt", generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(loaded(**kwargs()).images, pipe(**kwargs()).images)


@pytest.mark.parametrize("kwargs,message", [
    (dict(class_labels=["dog"]), "unknown class name 'dog'"),
    (dict(class_labels=[10]), r"out of range; pass ids in \[0, 10\)"),
    (dict(class_labels=[1], guidance_scale=-1.0), "guidance_scale must be"),
    (dict(class_labels=[1], refiner_temperature=-1.0), "temperature must be"),
    (dict(class_labels=[1], refiner_top_k=1.5), "top_k must be"),
    (dict(class_labels=[1], output_type="latent"), "output_type='latent'"),
])
def test_bad_inputs(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_mismatched_components_are_rejected(pipe):
    parts = dict(transformer=pipe.transformer, refiner=pipe.refiner, clusters=pipe.clusters, vqvae=pipe.vqvae)
    with pytest.raises(ValueError, match="coarse labels"):
        CTFPipeline(**{**parts, "transformer": tiny_transformer(vocab_size=64)})
    with pytest.raises(ValueError, match="bidirectional"):
        CTFPipeline(**{**parts, "refiner": tiny_transformer(vocab_size=64, input_vocab_size=8)})
    with pytest.raises(ValueError, match="refiner must read 8"):
        CTFPipeline(**{**parts, "refiner": tiny_transformer(vocab_size=64, attention="bidirectional")})
    with pytest.raises(ValueError, match="covers 32 codes but the tokenizer has 64"):
        CTFPipeline(**{**parts, "clusters": CodeClusters(codebook_size=32, num_clusters=8)})
    with pytest.raises(ValueError, match="num_clusters must lie"):
        CodeClusters(codebook_size=8, num_clusters=9)
    with pytest.raises(ValueError, match="method="):
        CodeClusters(method="spectral")
    with pytest.raises(ValueError, match="integer codebook ids"):
        pipe.clusters.coarse(torch.tensor([64]))


def test_a_model_reading_other_ids_than_it_predicts_cannot_decode(pipe):
    with pytest.raises(ValueError, match="cannot be fed back"):
        zoo.generate(pipe.refiner, 4, class_labels=torch.tensor([0]))


def test_recipe_trains_both_stages_into_a_pipeline(tmp_path):
    from zoo.cli import main as zoo_main

    vq = tiny_vq()
    vq.save_pretrained(tmp_path / "vq")
    tokens = tmp_path / "shapes.safetensors"
    assert zoo_main(["tokenize", str(tmp_path / "vq"), "--num", "8", "--size", "32", "--out", str(tokens)]) == 0
    out = tmp_path / "ctf"
    common = ["--tokens", str(tokens), "--vq", str(tmp_path / "vq"), "--out", str(out), "--steps", "2",
              "--batch-size", "4", "--hidden", "32", "--layers", "1", "--heads", "2", "--clusters", "8"]
    assert zoo_main(["train", "ctf-shapes", *common, "--stage", "coarse"]) == 0
    assert not (out / "pipeline").exists()  # the refiner is still missing
    assert zoo_main(["train", "ctf-shapes", *common, "--stage", "refiner", "--no-mask-fine-logits"]) == 0
    pipe = CTFPipeline.from_pretrained(out / "pipeline")
    assert pipe.config.mask_fine_logits is False and pipe.clusters.config.num_clusters == 8
    assert pipe.refiner.config.attention == "bidirectional" and pipe.transformer.config.vocab_size == 8
    pipe.set_progress_bar_config(disable=True)
    assert pipe(class_labels=["star"], num_images_per_prompt=2).images[0].size == (32, 32)


def test_ctf_benchmark_on_tiny_pipelines(tmp_path, monkeypatch):
    """benchmarks/ctf.py end to end on random 32 px pipelines (the numbers mean nothing)."""
    import json

    from benchmarks import common, ctf
    from pipelines import ARImagePipeline

    torch.manual_seed(0)
    vq = VQModel(codebook_size=64, codebook_dim=4, encoder_ch=32, decoder_ch=32, encoder_ch_mult=[1, 1, 1],
                 decoder_ch_mult=[1, 1, 1], num_res_blocks=1, z_channels=32).eval()
    ARImagePipeline(transformer=tiny_transformer(grid_size=(8, 8)), vqvae=vq).save_pretrained(tmp_path / "base")
    for name, method in (("ctf", "kmeans"), ("random", "random")):
        CTFPipeline(transformer=tiny_transformer(vocab_size=8, grid_size=(8, 8)),
                    refiner=tiny_transformer(vocab_size=64, input_vocab_size=8, attention="bidirectional",
                                             grid_size=(8, 8)),
                    clusters=CodeClusters.fit(vq.codebook, 8, method=method), vqvae=vq,
                    mask_fine_logits=False).save_pretrained(tmp_path / name)
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    assert ctf.main(["--baseline", str(tmp_path / "base"), "--ctf", str(tmp_path / "ctf"), "--ablation",
                     f"random={tmp_path / 'random'}", "--latency-repeats", "1", "--baseline-cfg", "1.0", "2.0",
                     "--images", "20", "--batch-size", "8", "--quick"]) == 0
    result = json.loads((tmp_path / "ctf.quick.json").read_text())
    rows = result["rows"]
    assert len(rows) == 6 and [r["cfg"] for r in rows] == [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert all(r["system"].endswith("(baseline)") and "aux_params_m" not in r for r in rows[:2])
    assert [r["mask_fine_logits"] for r in rows[2:]] == [False, True, False, True]
    assert rows[4]["cluster_method"] == "random" and all(r["images_per_s"] > 0 and r["latency_s"] > 0 for r in rows)
    assert len(result["claims"]) == 3 and "median of 3 batches taken in turn" in result["claims"][2]["evidence"]

    assert ctf.main(["--baseline", str(tmp_path / "base"), "--ctf", str(tmp_path / "ctf"), "--speed-only",
                     "--latency-repeats", "1", "--baseline-cfg", "1.0", "2.0", "--images", "10", "--quick"]) == 0
    speed = json.loads((tmp_path / "ctf-speed.quick.json").read_text())
    assert len(speed["rows"]) == 4 and not any("shapes_fid" in r for r in speed["rows"])
    assert [c["claim"] for c in speed["claims"]] == [result["claims"][2]["claim"]]
    with pytest.raises(SystemExit, match="drop --ablation"):
        ctf.main(["--speed-only", "--ablation", f"random={tmp_path / 'random'}", "--quick"])


def test_builtin_ctf_shapes_generates_offline(offline, tmp_path):
    from PIL import Image

    from weights_registry import get_entry
    from zoo.cli import main

    entry = get_entry("ctf-shapes")
    assert entry.kind == "builtin" and (entry.path / "README.md").is_file()
    pipe = zoo.load("ctf-shapes")
    assert type(pipe) is CTFPipeline and pipe.transformer.dtype == pipe.refiner.dtype == torch.float32
    assert pipe.config.class_names[5] == "star" and pipe.clusters.config.codebook_size == 4096
    assert pipe.config.mask_fine_logits and pipe.transformer.config.vocab_size == pipe.clusters.config.num_clusters
    assert main(["generate", "ctf-shapes", "--class", "3", "--num", "2", "--seed", "0",
                 "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size[1] == 64
