"""Primitives: deterministic shapes in [-1, 1], surface points on the surface, exact occupancy."""

import numpy as np
import pytest
import torch

from zoo.data.primitives import CATEGORIES, Part, PrimitivesDataset, sample_spec


def test_items_are_deterministic_and_splits_differ():
    a, b = PrimitivesDataset("train", num_points=256, num_uniform=64, num_near=64, length=4), \
        PrimitivesDataset("train", num_points=256, num_uniform=64, num_near=64, length=4)
    x, y = a[1], b[1]
    assert all(torch.equal(x[k], y[k]) for k in ("points", "normals", "queries", "occupancy"))
    assert x["points"].shape == (256, 3) and x["queries"].shape == (128, 3) and x["occupancy"].shape == (128,)
    test = PrimitivesDataset("test", num_points=256, length=4)
    assert test.spec(1) != a.spec(1)


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_is_normalised_with_points_on_its_surface(category):
    data = PrimitivesDataset("validation", num_points=512, num_uniform=256, num_near=256, length=2, category=category)
    spec, item = data.spec(0), data[0]
    assert spec.category == category and item["label"] == CATEGORIES.index(category)
    assert (2 if category == "union" else 1) <= len(spec.parts) <= (3 if category == "union" else 1)
    points, normals = item["points"].numpy(), item["normals"].numpy()
    assert np.abs(points).max() <= 0.9 + 1e-4
    assert np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-4)
    assert spec.contains(points + 0.01 * normals).mean() < 0.02  # just outside: empty
    assert spec.contains(points - 0.01 * normals).mean() > 0.98  # just inside: solid
    occupancy = item["occupancy"].numpy()
    assert 0.02 < occupancy.mean() < 0.9
    assert np.array_equal(occupancy, spec.contains(item["queries"].numpy()))
    assert abs(np.abs(spec.mesh().bounds).max() - 0.9) < 1e-3  # the bounding box touches the 0.9 cube


def test_analytic_inside_tests_of_parts():
    identity = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    pts = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.45], [0.6, 0.0, 0.0], [0.4, 0.0, 0.0]])
    assert Part("sphere", (0.5,), identity, (0, 0, 0)).contains(pts).tolist() == [True, True, False, True]
    torus = Part("torus", (0.5, 0.1), identity, (0, 0, 0))
    assert torus.contains(pts).tolist() == [False, False, True, True]
    cone = Part("cone", (0.5, 1.0), identity, (0, 0, 0))  # base at z = -0.5, apex at z = 0.5
    probes = np.array([[0.0, 0.0, 0.45], [0.3, 0.0, 0.3], [0.3, 0.0, -0.3]])
    assert cone.contains(probes).tolist() == [True, False, True]
    moved = Part("box", (1.0, 1.0, 1.0), identity, (2.0, 0.0, 0.0), scale=0.5)
    assert moved.contains(np.array([[2.2, 0.0, 0.0], [2.3, 0.0, 0.0]])).tolist() == [True, False]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown category"):
        PrimitivesDataset(category="pyramid")
    with pytest.raises(ValueError, match="unknown split"):
        PrimitivesDataset("dev")
    with pytest.raises(IndexError):
        PrimitivesDataset("test", length=3).spec(3)
    with pytest.raises(ValueError, match="unknown category"):
        sample_spec(np.random.default_rng(0), "pyramid")
