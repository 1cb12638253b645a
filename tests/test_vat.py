"""VAT: multi-scale token counts, residual quantisation, overfitting one shape, meshes, 3D metrics, errors."""

import numpy as np
import pytest
import torch

from tokenizers_visual.vat import VAT, farthest_point_sample, fourier_features, logits_to_mesh, morton_order
from zoo.data.primitives import PrimitivesDataset
from zoo.metrics.shapes3d import chamfer_fscore, generation_metrics, sample_surface, volume_iou
from zoo.nn.quantizers import MultiScaleResidualVQ

TINY = dict(num_latents=8, latent_dim=8, codebook_size=32, width=64, encoder_depth=1, decoder_depth=1, head_dim=32,
            triplane_resolution=16, triplane_patch=4, triplane_channels=16, mlp_hidden=32)


def _item(category="box"):
    item = PrimitivesDataset("train", num_points=256, num_uniform=512, num_near=512, length=1, category=category)[0]
    return [item[k][None] for k in ("points", "normals", "queries", "occupancy")]


def _tiny_vat_in_training(copies: int):
    """A seeded tiny VAT in training mode, and `copies` copies of one box's points, normals and queries."""
    torch.manual_seed(0)
    vat = VAT(**TINY).train()
    points, normals, queries, _ = _item()
    return (vat, *(x.repeat(copies, 1, 1) for x in (points, normals, queries)))


@pytest.fixture(scope="module")
def fitted():
    """A tiny VAT overfitted to one box (100 Adam steps)."""
    torch.manual_seed(0)
    points, normals, queries, occupancy = _item()
    vat = VAT(**TINY)
    optimizer = torch.optim.Adam(vat.parameters(), lr=3e-3)
    for _ in range(100):
        out = vat(points, normals, queries, occupancy)
        loss = out["bce"] + 1e-4 * out["kl"] + out["vq"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return vat.eval(), (points, normals, queries, occupancy)


def test_scales_and_token_counts():
    vat = VAT(**TINY)
    assert vat.scales == [1, 2, 4, 8] and vat.quantizer.num_tokens == 15
    assert vat.num_bytes() == 15 * 5 / 8 and vat.num_bytes(2) == 3 * 5 / 8  # 32 codes: 5 bits a token
    points, normals, _, _ = _item()
    ids = vat.encode(points, normals)
    assert [tuple(i.shape) for i in ids] == [(1, 1), (1, 2), (1, 4), (1, 8)]
    custom = VAT(**{**TINY, "scales": [1, 3, 8]})
    assert [i.shape[1] for i in custom.encode(points, normals)] == [1, 3, 8]
    with pytest.raises(ValueError, match="last scale"):
        VAT(**{**TINY, "scales": [1, 2, 4]})
    with pytest.raises(ValueError, match="increasing"):
        MultiScaleResidualVQ(4, [2, 2, 8], 16)


def _smooth_features(count: int) -> torch.Tensor:
    """[count, 16, 4] features with coarse structure (upsampled from 4 tokens) and fine noise."""
    coarse = torch.randn(count, 4, 4).transpose(1, 2)
    smooth = torch.nn.functional.interpolate(coarse, size=16, mode="linear").transpose(1, 2)
    return smooth + 0.3 * torch.randn(count, 16, 4)


def test_each_scale_reduces_the_residual():
    """Fit a multi-scale quantiser on training features; on new features, every added scale brings the
    reconstruction closer."""
    torch.manual_seed(0)
    quantizer = MultiScaleResidualVQ(4, [1, 2, 4, 8, 16], 64)
    train = _smooth_features(256)
    with torch.no_grad():
        quantizer.codebooks[0].embedding.weight.copy_(train.reshape(-1, 4)[torch.randperm(4096)[:64]])
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=1e-2)
    for _ in range(100):
        loss = quantizer(train)[2]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    quantizer.eval()
    test = _smooth_features(128)
    with torch.no_grad():
        ids = quantizer.encode(test)
        errors = [(test - quantizer.decode(ids[:k])).norm().item() for k in range(1, 6)]
        assert torch.allclose(quantizer.decode(ids), quantizer(test)[0], atol=1e-6)
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * test.norm().item()
    next_input = quantizer.next_scale_input(ids[:2])
    assert next_input.shape == (128, 4, 4)


def test_commitment_compares_with_the_final_reconstruction_or_every_scale():
    torch.manual_seed(0)
    f = torch.randn(2, 8, 4, requires_grad=True)
    last = MultiScaleResidualVQ(4, [1, 2, 8], 16, commitment="last_scale")
    f_hat, _, loss, _ = last(f)
    loss.backward()
    # only the commitment term reaches the features: beta * mse(f, final f_hat)
    assert torch.allclose(f.grad, 0.25 * 2 * (f - f_hat).detach() / f.numel(), atol=1e-7)
    f.grad = None
    every = MultiScaleResidualVQ(4, [1, 2, 8], 16, commitment="every_scale")
    every.load_state_dict(last.state_dict())
    every(f)[2].backward()
    assert not torch.allclose(f.grad, 0.25 * 2 * (f - f_hat).detach() / f.numel(), atol=1e-7)
    with pytest.raises(ValueError, match="commitment"):
        MultiScaleResidualVQ(4, [1, 2, 8], 16, commitment="first")


def test_decode_of_encode_has_high_iou_and_makes_a_mesh(fitted, tmp_path):
    import trimesh

    vat, (points, normals, queries, occupancy) = fitted
    ids = vat.encode(points, normals)
    with torch.no_grad():
        logits = vat.decode_occupancy(ids)(queries)
    assert volume_iou(logits, occupancy) > 0.8
    (mesh,) = vat.decode_mesh(ids, resolution=33)
    assert len(mesh.faces) > 0 and mesh.volume > 0
    reference = sample_surface(trimesh.Trimesh(), 10)
    assert reference.shape == (0, 3)
    for suffix in ("glb", "obj", "ply"):
        mesh.export(tmp_path / f"shape.{suffix}")
        loaded = trimesh.load(tmp_path / f"shape.{suffix}", force="mesh")
        assert len(loaded.faces) == len(mesh.faces)
        assert np.allclose(np.sort(loaded.vertices, axis=0), np.sort(mesh.vertices, axis=0), atol=1e-4)


def test_logits_to_mesh_matches_a_sphere():
    axis = np.linspace(-1, 1, 65)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    mesh = logits_to_mesh(0.5 - np.sqrt(x ** 2 + y ** 2 + z ** 2))
    assert abs(mesh.volume - 4 / 3 * np.pi * 0.125) < 0.01  # outward faces: positive volume
    assert len(logits_to_mesh(-np.ones((9, 9, 9))).faces) == 0


def test_3d_metrics():
    rng = np.random.default_rng(0)
    sphere = rng.normal(size=(4000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    same = chamfer_fscore(sphere, sphere)
    assert same["chamfer"] == 0 and same["fscore@0.02"] == 1.0
    shifted = chamfer_fscore(sphere + [0.05, 0, 0], sphere)
    assert 0.05 < shifted["chamfer"] < 0.11 and shifted["fscore@0.01"] < 0.5
    assert chamfer_fscore(np.zeros((0, 3)), sphere)["fscore@0.02"] == 0.0
    logits, truth = torch.tensor([1.0, -1.0, 2.0, -3.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert volume_iou(logits, truth) == 0.5
    clouds = [sphere[i::4] * s for i, s in enumerate((1.0, 1.1, 1.2, 1.3))]
    matched = generation_metrics(clouds[:2], clouds[:2])
    assert matched["coverage"] == 1.0 and matched["mmd_chamfer"] < 0.1
    far = generation_metrics([c + 5 for c in clouds[:2]], clouds[2:])
    assert far["one_nna"] == 1.0  # perfectly separable sets


def test_fourier_features():
    xyz = torch.tensor([[0.5, -0.25, 0.0]])
    f = fourier_features(xyz, 2)
    assert f.shape == (1, 15) and torch.equal(f[0, :3], xyz[0])
    assert torch.allclose(f[0, 3:9], torch.sin(torch.pi * torch.tensor([0.5, 1.0, -0.25, -0.5, 0.0, 0.0])))


def test_farthest_points_spread_and_morton_order_sorts_space():
    corners = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    cloud = torch.cat([corners, 0.01 * torch.randn(50, 3)])[None]  # the 8 corners and a clump at the centre
    picked = farthest_point_sample(cloud, 8)[0]
    assert sorted(picked.tolist()) == list(range(8))  # the corners, not the clump
    order = morton_order(cloud[:, :8])[0]
    assert order[0] == 0 and order[-1] == 7  # (-1, -1, -1) first, (1, 1, 1) last
    with pytest.raises(ValueError, match="centres"):
        farthest_point_sample(cloud[:, :4], 8)


def test_point_queries_add_the_tokens_of_spread_surface_points():
    torch.manual_seed(0)
    points, normals, _, _ = _item()
    tokens = torch.randn(1, points.shape[1], 64)
    learned = VAT(**TINY)
    assert torch.equal(learned.latent_queries(points, tokens), learned.latent_tokens[None])
    vat = VAT(**{**TINY, "point_queries": True})
    centres = vat.query_centres(points)[0]
    assert len(set(centres.tolist())) == 8  # eight distinct surface points ...
    spread = torch.cdist(points[0, centres], points[0, centres]).max()
    assert spread > 0.5 * torch.cdist(points[0], points[0]).max()  # ... spread over the shape
    assert torch.allclose(vat.latent_queries(points, tokens), vat.latent_tokens + tokens[0, centres])
    assert [i.shape[1] for i in vat.encode(points, normals)] == [1, 2, 4, 8]


def test_bad_inputs():
    vat = VAT(**TINY)
    points, normals, _, _ = _item()
    with pytest.raises(ValueError, match="normals"):
        vat.encode(points)
    with pytest.raises(ValueError, match="NaN"):
        vat.encode(torch.full_like(points, float("nan")), normals)
    with pytest.raises(ValueError, match="empty"):
        vat.encode(points[:, :0], normals[:, :0])
    with pytest.raises(ValueError, match="\\[B, N, 3\\]"):
        vat.encode(points[0], normals[0])
    with pytest.raises(ValueError, match="shaped like"):
        vat.encode(points, normals[:, :5])
    with pytest.raises(ValueError, match="scale 0 takes"):
        vat.decode([torch.zeros(1, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="\\[0, 32\\)"):
        vat.decode([torch.full((1, 1), 32)])
    occupancy = vat.decode_occupancy(vat.encode(points, normals))
    with pytest.raises(ValueError, match="queries must be"):
        occupancy(torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="NaN"):
        occupancy(torch.full((1, 5, 3), float("nan")))
    no_normals = VAT(**{**TINY, "use_normals": False})
    assert len(no_normals.encode(points)) == 4


# ------------------------------------------------------------------ next-scale AR and the pipeline
def _next_scale_model(quantizer, num_classes=7):
    from zoo.ar import ARTransformer
    from zoo.ar.next_scale import next_scale_config

    torch.manual_seed(0)
    model = ARTransformer(**next_scale_config(quantizer, hidden_size=32, num_layers=2, num_heads=2,
                                              num_classes=num_classes)).eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    return model


def test_next_scale_step_matches_teacher_forcing_and_the_uncached_loop():
    from zoo.ar import generate
    from zoo.ar.next_scale import NextScaleStep

    quantizer = MultiScaleResidualVQ(4, [1, 2, 4, 8], 16).eval()
    model = _next_scale_model(quantizer, num_classes=3)
    labels = torch.tensor([0, 2])
    kwargs = dict(class_labels=labels, guidance_scale=1.0, temperature=0)
    greedy = generate(model, 15, step=NextScaleStep(quantizer), **kwargs).tokens
    inputs = quantizer.teacher_forcing_inputs(list(greedy.split([1, 2, 4, 8], dim=1)))
    with torch.no_grad():
        assert torch.equal(model(inputs, class_labels=labels).argmax(-1), greedy)  # position t predicts token t
    sampled = dict(class_labels=labels, guidance_scale=2.0,
                   generator=[torch.Generator().manual_seed(i) for i in (0, 1)])
    cached = generate(model, 15, step=NextScaleStep(quantizer), **sampled).tokens
    sampled["generator"] = [torch.Generator().manual_seed(i) for i in (0, 1)]
    assert torch.equal(cached, generate(model, 15, step=NextScaleStep(quantizer), use_cache=False, **sampled).tokens)
    assert generate(model, 3, step=NextScaleStep(quantizer), **kwargs).tokens.shape == (2, 3)  # two scales
    with pytest.raises(ValueError, match="not whole scales"):
        generate(model, 5, step=NextScaleStep(quantizer), **kwargs)


@pytest.fixture(scope="module")
def vat_pipe():
    from pipelines import VAT3DPipeline
    from zoo.data.primitives import CATEGORIES

    torch.manual_seed(0)
    vat = VAT(**TINY).eval()
    return VAT3DPipeline(transformer=_next_scale_model(vat.quantizer), vat=vat, class_names=CATEGORIES)


def test_pipeline_outputs_meshes_grids_and_tokens(vat_pipe, tmp_path):
    from diffusers import DiffusionPipeline

    out = vat_pipe(class_labels=["torus", 2], resolution=17, generator=torch.Generator().manual_seed(0))
    assert len(out.meshes) == 2 and [t.shape for t in out.tokens] == [(2, 1), (2, 2), (2, 4), (2, 8)]
    assert out.preview(64).size == (128, 64)
    coarse = vat_pipe(class_labels="box", num_scales=2, output_type="np", resolution=9)
    assert coarse.meshes.shape == (1, 9, 9, 9) and len(coarse.tokens) == 2
    vat_pipe.save_pretrained(tmp_path / "pipe")
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert type(loaded).__name__ == "VAT3DPipeline" and loaded.config.class_names[5] == "torus"


def test_pipeline_errors(vat_pipe):
    with pytest.raises(ValueError, match="unknown class name"):
        vat_pipe(class_labels="pyramid")
    with pytest.raises(ValueError, match="num_scales"):
        vat_pipe(class_labels=0, num_scales=0)
    with pytest.raises(ValueError, match="output_type"):
        vat_pipe(class_labels=0, output_type="pil")
    with pytest.raises(ValueError, match="resolution"):
        vat_pipe(class_labels=0, resolution=4)


def test_render_mesh():
    import trimesh

    from zoo.render import render_mesh

    image = np.asarray(render_mesh(trimesh.creation.icosphere(radius=0.8), size=64))
    painted = (image != 255).any(-1)
    assert 0.3 < painted.mean() < 0.7 and image[32, 32].tolist() != [255, 255, 255]
    assert (np.asarray(render_mesh(trimesh.Trimesh(), size=32)) == 255).all()
    with pytest.raises(ValueError, match="size"):
        render_mesh(trimesh.Trimesh(), size=4)


def test_training_can_skip_quantisation_per_shape():
    vat, points, normals, queries = _tiny_vat_in_training(2)
    with torch.no_grad():
        mean, _ = vat.encode_gaussian(points, normals)
        torch.manual_seed(1)
        skipped = vat(points, normals, queries, no_quantization_rate=1.0)
        torch.manual_seed(1)
        quantised = vat(points, normals, queries)
    assert not torch.allclose(skipped["logits"], quantised["logits"])  # rate 1: the decoder reads the latents
    assert torch.allclose(skipped["vq"], quantised["vq"])  # the quantiser still learns on every shape
    vat.eval()
    with torch.no_grad():  # inference always quantises
        assert torch.allclose(vat(points, normals, queries, no_quantization_rate=1.0)["logits"],
                              vat(points, normals, queries)["logits"])
    with pytest.raises(ValueError, match="no_quantization_rate"):
        vat(points, normals, queries, no_quantization_rate=1.5)


def test_training_can_decode_random_prefixes_of_the_scales():
    """prefix_rate: a shape is decoded from the f_hat of its first k scales, one of the prefixes `decode` gives."""
    vat, points, normals, queries = _tiny_vat_in_training(8)
    with torch.no_grad():
        mean, _ = vat.encode_gaussian(points, normals)
        z_hat, ids, _, _ = vat.quantizer(mean)
        prefixes = vat.quantizer.prefix_reconstructions(ids)
        assert prefixes.shape == (len(ids), *mean.shape)
        for k in range(1, len(ids) + 1):
            assert torch.allclose(prefixes[k - 1], vat.quantizer.decode(ids[:k]), atol=1e-6)
        torch.manual_seed(3)
        mixed = vat.decode_random_prefixes(mean, z_hat, ids, rate=1.0)
    kept = [[torch.allclose(mixed[b], prefixes[k, b], atol=1e-5) for k in range(len(ids))].index(True)
            for b in range(8)]
    assert any(k < len(ids) - 1 for k in kept)  # some shapes read only a prefix
    with torch.no_grad():
        assert torch.equal(vat.decode_random_prefixes(mean, z_hat, ids, rate=0.0), z_hat)
        logits = vat(points, normals, queries, prefix_rate=1.0)["logits"]
    assert logits.shape == (8, queries.shape[1])
    with pytest.raises(ValueError, match="prefix_rate"):
        vat(points, normals, queries, prefix_rate=-0.1)


def test_vat_recipe_trains_as_a_vae_first_then_quantises():
    from zoo.train.vat_primitives import make_loss

    calls = []

    def model(points, normals, queries, occupancy, **kwargs):
        calls.append(kwargs)
        zero = torch.zeros(())
        return {"bce": zero, "kl": zero, "vq": zero, "residuals": [zero]}

    loss, track_step = make_loss(1e-4, no_quantization_rate=0.5, vae_steps=10)
    batch = dict.fromkeys(("points", "normals", "queries", "occupancy"))
    loss(model, batch)
    track_step(10, None, None, print)
    loss(model, batch)
    assert calls == [{"no_quantization_rate": 1.0, "commit": False, "prefix_rate": 0.0},
                     {"no_quantization_rate": 0.5, "commit": True, "prefix_rate": 0.0}]

    calls.clear()  # a run resumed past the VAE phase quantises from its first step
    resumed, _ = make_loss(1e-4, no_quantization_rate=0.5, vae_steps=10, start_step=10)
    resumed(model, batch)
    assert calls == [{"no_quantization_rate": 0.5, "commit": True, "prefix_rate": 0.0}]


def test_vat_recipe_init_goes_on_from_a_trained_vat(tmp_path):
    from diffusers import AutoencoderKL

    from zoo.train.vat_primitives import initial_model, parse

    VAT(**TINY).to(torch.float16).save_pretrained(tmp_path / "vat")
    model = initial_model(parse(["--out", str(tmp_path / "run"), "--init", str(tmp_path / "vat"), "--width", "512"]))
    assert isinstance(model, VAT) and model.dtype == torch.float32 and model.config.width == TINY["width"]
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8).save_pretrained(tmp_path / "vae")
    with pytest.raises(SystemExit, match="not a VAT"):
        initial_model(parse(["--out", str(tmp_path / "run"), "--init", str(tmp_path / "vae")]))


def test_vat_recipe_trains_the_decoder_alone(tmp_path):
    """`zoo train vat-primitives --init ... --decoder-only`: only the decoder side moves, so the token ids
    (and AR models trained on them) stay valid."""
    from zoo.cli import main
    from zoo.train.vat_primitives import DECODER_SIDE

    torch.manual_seed(0)
    VAT(**TINY).save_pretrained(tmp_path / "vat")
    common = ["--init", str(tmp_path / "vat"), "--cache-dir", str(tmp_path), "--shapes", "2", "--points", "32",
              "--queries", "64", "--batch-size", "2", "--lr", "1e-2"]
    assert main(["train", "vat-primitives", "--out", str(tmp_path / "dec"), "--decoder-only", "--steps", "2",
                 "--prefix-rate", "0.5", *common]) == 0
    before, after = (VAT.from_pretrained(path) for path in (tmp_path / "vat", tmp_path / "dec" / "model"))
    changed = {n for n, w in before.state_dict().items() if not torch.equal(w, after.state_dict()[n])}
    assert changed and all(n.startswith(DECODER_SIDE) for n in changed)
    points, normals, _, _ = _item()
    assert all(torch.equal(a, b) for a, b in zip(before.encode(points, normals), after.encode(points, normals)))
    with pytest.raises(SystemExit):  # nothing to go on from
        main(["train", "vat-primitives", "--out", str(tmp_path / "bad"), "--decoder-only", "--shapes", "2"])
    with pytest.raises(SystemExit):  # the decoder learns the quantised latents it reads at inference
        main(["train", "vat-primitives", "--out", str(tmp_path / "bad"), "--decoder-only", "--no-quant-rate", "0.5",
              *common])


def test_builtin_vat_primitives_reconstructs_shapes(offline):
    import zoo

    vat = zoo.load("vat-primitives")
    assert vat.scales == [1, 2, 4, 8, 16, 32, 64] and vat.num_bytes() == 158.75
    data = PrimitivesDataset("test", num_points=256, length=4)
    items = [data[i] for i in range(4)]
    points, normals = (torch.stack([x[k] for x in items]) for k in ("points", "normals"))
    ids = vat.encode(points, normals)
    planes = vat.decode(ids)
    ious = [volume_iou(vat.occupancy_logits(planes[i:i + 1], x["queries"][None])[0], x["occupancy"])
            for i, x in enumerate(items)]
    assert min(ious) > 0.3 and np.mean(ious) > 0.5, ious  # a mean-shape blob scores about 0.34
    meshes = vat.planes_to_meshes(planes[:1], resolution=33)
    assert len(meshes[0].faces) > 0


def test_builtin_vat_ar_primitives_generates_a_mesh_file(offline, tmp_path):
    import trimesh

    import zoo
    from zoo.cli import main

    pipe = zoo.load("vat-ar-primitives")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.class_names[-2] == "torus"
    out = pipe(class_labels=["sphere", "box"], resolution=33, generator=torch.Generator().manual_seed(0))
    assert len(out.meshes) == 2 and [t.shape[1] for t in out.tokens] == [1, 2, 4, 8, 16, 32, 64]
    assert main(["generate", "vat-ar-primitives", "--class", "torus", "--out", str(tmp_path / "torus.glb")]) == 0
    assert len(trimesh.load(tmp_path / "torus.glb", force="mesh").faces) > 0
    with pytest.raises(ValueError, match="class"):
        pipe(class_labels=["teapot"])
