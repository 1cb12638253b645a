"""3D reconstruction and generation metrics, with 3DShape2VecSet's evaluation protocol (`eval.py`):

- meshes are extracted by marching cubes on a 129^3 grid over [-1, 1]^3 (`VAT.decode_mesh`);
- Chamfer distance = mean nearest-neighbour distance from the reference surface samples to the
  predicted ones plus the reverse (Euclidean distances, not squared), on 100k samples per surface;
- F-score at a threshold tau (0.02, and 0.01 as VAT also reports): precision = share of predicted
  samples within tau of the reference, recall = the reverse, F = 2PR / (P + R);
- volume IoU of the occupancy predicted at query points (logit >= 0) against the true labels;
- generation: coverage, minimum matching distance (MMD) and 1-NNA over Chamfer distances between a
  generated set and a reference set (the point-cloud generation metrics of Achlioptas et al. / PointFlow).
"""

from __future__ import annotations

import numpy as np
import torch


def sample_surface(mesh, count: int = 100_000, seed: int = 0) -> np.ndarray:
    """`count` points on a trimesh mesh [count, 3]; an empty mesh gives an empty array."""
    import trimesh

    if mesh is None or len(mesh.faces) == 0:
        return np.zeros((0, 3), dtype=np.float32)
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return points.astype(np.float32)


def _nearest(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """For each source point, the distance to the nearest target point."""
    from scipy.spatial import cKDTree

    return cKDTree(target).query(source, k=1, workers=-1)[0]


def chamfer_fscore(predicted: np.ndarray, reference: np.ndarray, thresholds=(0.02, 0.01)) -> dict:
    """Surface samples [P, 3] and [R, 3] -> {"chamfer", "fscore@tau"...}; an empty prediction scores
    Chamfer inf and F-score 0."""
    if len(reference) == 0:
        raise ValueError("the reference surface has no points.")
    if len(predicted) == 0:
        return {"chamfer": float("inf"), **{f"fscore@{t}": 0.0 for t in thresholds}}
    to_reference, to_predicted = _nearest(predicted, reference), _nearest(reference, predicted)
    out = {"chamfer": float(to_reference.mean() + to_predicted.mean())}
    for t in thresholds:
        precision, recall = float((to_reference < t).mean()), float((to_predicted < t).mean())
        out[f"fscore@{t}"] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


def volume_iou(logits: torch.Tensor, occupancy: torch.Tensor) -> float:
    """IoU of predicted occupancy (logit >= 0) and true occupancy at the same query points."""
    predicted, truth = logits >= 0, occupancy > 0.5
    union = (predicted | truth).sum().item()
    return 1.0 if union == 0 else (predicted & truth).sum().item() / union


def generation_metrics(generated: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """Coverage, MMD (Chamfer) and 1-NNA accuracy between sets of surface samples (lists of [P, 3])."""
    if not generated or not reference:
        raise ValueError(f"need generated and reference shapes, got {len(generated)} and {len(reference)}.")

    def cd(a, b):
        return chamfer_fscore(a, b)["chamfer"] if len(a) else float("inf")

    gen_ref = np.array([[cd(g, r) for r in reference] for g in generated])
    def within(clouds):  # pairwise distances inside one set, infinite on the diagonal (leave one out)
        return np.array([[cd(a, b) if i != j else np.inf for j, b in enumerate(clouds)] for i, a in enumerate(clouds)])

    gen_gen, ref_ref = within(generated), within(reference)
    coverage = len(set(gen_ref.argmin(1).tolist())) / len(reference)
    mmd = float(gen_ref.min(0).mean())
    # 1-NNA: leave-one-out 1-nearest-neighbour classification of generated vs reference; 50% is ideal
    correct_gen = (gen_gen.min(1) < gen_ref.min(1)).sum()
    correct_ref = (ref_ref.min(1) < gen_ref.min(0)).sum()
    return {"coverage": coverage, "mmd_chamfer": mmd,
            "one_nna": float(correct_gen + correct_ref) / (len(generated) + len(reference))}
