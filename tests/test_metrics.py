import pytest
import torch

from zoo.data.shapes import ShapesDataset
from zoo.metrics.classifier import ATTRIBUTES, ShapesClassifier
from zoo.metrics.image import (attribute_accuracy, codebook_stats, perturb_tokens, precision_recall, psnr,
                               shapes_fid, shapes_inception_score, ssim)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    return ShapesClassifier().eval()


@pytest.fixture(scope="module")
def images():
    ds = ShapesDataset("test", size=32, length=48)
    return torch.stack([ds[i]["image"] for i in range(48)])


def test_reconstruction_metrics(images):
    assert psnr(images, images) > 80
    noisy = (images + 0.1 * torch.randn_like(images)).clamp(-1, 1)
    assert 15 < psnr(noisy, images) < 40 and ssim(images, images) == pytest.approx(1.0, abs=1e-4) and ssim(noisy, images) < 1


def test_fid_is_and_precision_recall_mechanics(classifier, images):
    real, other = images[:24], images[24:]
    same = shapes_fid(classifier, [real], [real])
    noise = shapes_fid(classifier, [real], [torch.rand_like(real) * 2 - 1])
    assert abs(same) < 1e-3 and noise > shapes_fid(classifier, [real], [other]) > same
    mean, std = shapes_inception_score(classifier, [images], splits=2)
    assert 1 <= mean <= len(ATTRIBUTES["shape"])
    feats = classifier.features(images).detach()
    assert precision_recall(feats, feats) == (1.0, 1.0)
    far = feats + 1e3
    assert precision_recall(feats, far) == (0.0, 0.0)


@pytest.mark.filterwarnings("ignore:std():UserWarning")  # one split has no spread
def test_inception_score_is_finite_for_a_saturated_classifier(images):
    class Saturated(torch.nn.Module):  # one-hot decisions with logits far outside float32's exp range
        config = None

        def forward(self, x):
            labels = torch.arange(len(x)) % 3  # three of ten classes ever seen
            return {"shape": torch.nn.functional.one_hot(labels, 10).float() * 4000 - 2000}

    mean, _ = shapes_inception_score(Saturated(), [images], splits=1)
    assert mean == pytest.approx(3.0, rel=1e-4)


def test_classifier_accepts_any_resolution_and_uint8(classifier, images):
    assert classifier(images)["shape"].shape == (48, 10)
    big = torch.nn.functional.interpolate(images, size=(96, 96))
    assert classifier.features(big).shape == (48, 256)
    assert classifier.features((images[:2] + 1).mul(127.5).byte()).shape == (2, 256)
    acc = attribute_accuracy(classifier, images[:4], {"shape": ["circle"] * 4})
    assert 0 <= acc["shape"] <= 1
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        classifier(images[:, :1])


def test_codebook_stats_and_perturbation():
    assert codebook_stats(torch.tensor([0, 1, 2, 3]), 8) == {"codebook_usage": 0.5, "perplexity": pytest.approx(4.0)}
    codebook = torch.nn.functional.normalize(torch.randn(32, 8), dim=-1)
    ids = torch.randint(0, 32, (4, 16, 16))
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(perturb_tokens(ids, codebook, 0.0, 4, gen), ids)
    moved = perturb_tokens(ids, codebook, 1.0, 4, gen)
    assert (moved != ids).all()
    nearest = torch.cdist(codebook, codebook).fill_diagonal_(float("inf")).topk(4, largest=False).indices
    assert all(m in nearest[i] for i, m in zip(ids.flatten().tolist(), moved.flatten().tolist()))
    half = perturb_tokens(ids, codebook, 0.5, 4, gen)
    assert 0.4 < (half != ids).float().mean() < 0.6
    with pytest.raises(ValueError, match="alpha"):
        perturb_tokens(ids, codebook, 1.5, 4)


def test_builtin_classifier_reads_shapes_images():
    import zoo
    from weights_registry import get_entry

    entry = get_entry("shapes-classifier")
    assert entry.kind == "builtin" and (entry.path / "README.md").is_file()
    classifier = zoo.load("shapes-classifier")
    data = ShapesDataset("test", size=64, length=60)
    images = torch.stack([data[i]["image"] for i in range(60)])
    specs = [data.spec(i) for i in range(60)]
    accuracy = attribute_accuracy(classifier, images, {"shape": [s.shape for s in specs],
                                                       "color": [s.color for s in specs],
                                                       "position": [s.position for s in specs]})
    assert accuracy["shape"] >= 0.9 and accuracy["color"] >= 0.95 and accuracy["position"] >= 0.95, accuracy


def test_classifier_corruptions_stay_in_range_and_are_seeded():
    from zoo.train.shapes_classifier import FIXED_CORRUPTIONS, LabelledShapes, corrupt

    image = ShapesDataset("train", size=64, length=1)[0]["image"]
    first = corrupt(image, torch.Generator().manual_seed(3))
    assert first.shape == image.shape and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, corrupt(image, torch.Generator().manual_seed(3)))
    changed = [not torch.equal(corrupt(image, torch.Generator().manual_seed(s)), image) for s in range(8)]
    assert sum(changed) >= 6  # each of four degradations with probability 1/2: all skipped 1 time in 16
    for name, degrade in FIXED_CORRUPTIONS.items():
        out = degrade(image, 5)
        assert torch.equal(out, degrade(image, 5)) and 0 < (out - image).abs().mean() < 0.2, name
    with pytest.raises(ValueError, match="corrupt_share"):
        LabelledShapes("train", length=2, corrupt_share=1.5)


def test_classifier_recipe_trains_and_reports_robustness(tmp_path):
    import json

    from zoo.cli import main as zoo_main

    out = tmp_path / "clf"
    assert zoo_main(["train", "shapes-classifier", "--out", str(out), "--steps", "3", "--batch-size", "4",
                     "--eval-images", "8"]) == 0
    accuracy = json.loads((out / "validation.json").read_text())["validation_accuracy"]
    assert set(accuracy) == {"32 px", "64 px", "128 px", "64 px, blur 32 px", "64 px, JPEG q30", "64 px, noise 0.1"}
    assert all(0 <= accuracy[k]["shape"] <= 1 for k in accuracy)
    assert ShapesClassifier.from_pretrained(out / "model") is not None
