"""Primitives: procedural 3D shapes for the 3D tokenizers, deterministic by seed.

A shape is one primitive (box, sphere, cylinder, cone, capsule, torus) or the union of two or three of
them ("union"), each with a random size, rotation and placement; the whole shape is centred and scaled
so that its bounding box fits in [-0.9, 0.9]^3 (inside the [-1, 1] cube of the evaluation protocol,
with room for marching cubes). The category is the label.

Meshes come from trimesh; inside/outside is computed analytically per part in its own frame (a union
is inside where any part is), so occupancy labels are exact for the ideal shapes and cheap. Surface
points of a union are the points of each part's surface that lie outside every other part; normals
are the face normals of the sampled triangles.

    data = PrimitivesDataset("train", num_points=2048)
    item = data[0]   # points [2048, 3], normals [2048, 3], queries [Q, 3], occupancy [Q], label
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CATEGORIES = ["box", "sphere", "cylinder", "cone", "capsule", "torus", "union"]
PART_KINDS = CATEGORIES[:-1]
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
SPLIT_SIZES = {"train": 20_000, "validation": 1_000, "test": 1_000}
EXTENT = 0.9  # shapes fit in [-EXTENT, EXTENT]^3


@dataclass(frozen=True)
class Part:
    """One primitive: `kind`, its size parameters in its own frame, and the frame (rotation [3, 3] and
    translation [3], applied as x_world = scale * (R @ x_local) + t)."""

    kind: str
    size: tuple[float, ...]
    rotation: tuple[tuple[float, ...], ...]
    translation: tuple[float, ...]
    scale: float = 1.0

    def mesh(self):
        import trimesh

        a = self.size
        if self.kind == "box":
            mesh = trimesh.creation.box(extents=a)
        elif self.kind == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=3, radius=a[0])
        elif self.kind == "cylinder":
            mesh = trimesh.creation.cylinder(radius=a[0], height=a[1], sections=48)
        elif self.kind == "cone":  # trimesh puts the base at z = 0: centre it
            mesh = trimesh.creation.cone(radius=a[0], height=a[1], sections=48)
            mesh.apply_translation([0, 0, -a[1] / 2])
        elif self.kind == "capsule":  # a[1]: distance between the two sphere centres
            mesh = trimesh.creation.capsule(height=a[1], radius=a[0], count=[24, 24])
        elif self.kind == "torus":
            mesh = trimesh.creation.torus(major_radius=a[0], minor_radius=a[1], major_sections=48, minor_sections=24)
        else:
            raise ValueError(f"unknown primitive {self.kind!r}; pick one of {PART_KINDS}.")
        transform = np.eye(4)
        transform[:3, :3] = self.scale * np.array(self.rotation)
        transform[:3, 3] = self.translation
        mesh.apply_transform(transform)
        return mesh

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Analytic inside test of world points [N, 3] -> bool [N]."""
        local = (points - np.array(self.translation)) @ np.array(self.rotation) / self.scale  # R^T (x - t) / s
        x, y, z = local.T
        a = self.size
        if self.kind == "box":
            return np.all(np.abs(local) <= np.array(a) / 2, axis=1)
        if self.kind == "sphere":
            return np.linalg.norm(local, axis=1) <= a[0]
        radial = np.hypot(x, y)
        if self.kind == "cylinder":
            return (radial <= a[0]) & (np.abs(z) <= a[1] / 2)
        if self.kind == "cone":
            height = z + a[1] / 2  # 0 at the base, a[1] at the apex
            return (height >= 0) & (height <= a[1]) & (radial <= a[0] * (1 - height / a[1]))
        if self.kind == "capsule":
            nearest = np.clip(z, -a[1] / 2, a[1] / 2)
            return np.hypot(radial, z - nearest) <= a[0]
        if self.kind == "torus":
            return np.hypot(radial - a[0], z) <= a[1]
        raise ValueError(f"unknown primitive {self.kind!r}.")


@dataclass(frozen=True)
class PrimitiveSpec:
    """Everything that determines a shape: its category and its parts (already normalised)."""

    category: str
    parts: tuple[Part, ...]

    @property
    def label(self) -> int:
        return CATEGORIES.index(self.category)

    def mesh(self):
        """All parts as one trimesh (a union's parts overlap: it is a display mesh, not a watertight one)."""
        import trimesh

        return trimesh.util.concatenate([p.mesh() for p in self.parts])

    def contains(self, points: np.ndarray) -> np.ndarray:
        inside = np.zeros(len(points), dtype=bool)
        for part in self.parts:
            inside |= part.contains(points)
        return inside


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _random_size(kind: str, rng: np.random.Generator) -> tuple[float, ...]:
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    if kind == "box":
        return (u(0.4, 1.0), u(0.4, 1.0), u(0.4, 1.0))
    if kind == "sphere":
        return (u(0.3, 0.5),)
    if kind in ("cylinder", "cone"):
        return (u(0.2, 0.5), u(0.5, 1.0))
    if kind == "capsule":
        return (u(0.15, 0.35), u(0.3, 0.8))
    return (u(0.3, 0.5), u(0.08, 0.2))  # torus: major, minor radius


def sample_spec(rng: np.random.Generator, category: str | None = None) -> PrimitiveSpec:
    """A random shape of `category` (random category if None), normalised into [-0.9, 0.9]^3."""
    if category is None:
        category = CATEGORIES[rng.integers(len(CATEGORIES))]
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; pick one of {CATEGORIES}.")
    kinds = [category]
    if category == "union":
        kinds = [PART_KINDS[i] for i in rng.integers(len(PART_KINDS), size=rng.integers(2, 4))]
    parts = []
    for i, kind in enumerate(kinds):
        offset = rng.normal(scale=0.25, size=3) if i else np.zeros(3)  # parts of a union overlap or touch
        parts.append(Part(kind, _random_size(kind, rng), tuple(map(tuple, _random_rotation(rng))), tuple(offset)))
    return PrimitiveSpec(category, tuple(_normalise(parts)))


def _normalise(parts: list[Part]) -> list[Part]:
    """Centre the parts' joint bounding box and scale it so that its largest side is 2 * EXTENT."""
    bounds = np.array([p.mesh().bounds for p in parts])
    low, high = bounds[:, 0].min(0), bounds[:, 1].max(0)
    centre, scale = (low + high) / 2, 2 * EXTENT / float((high - low).max())
    return [Part(p.kind, p.size, p.rotation, tuple(scale * (np.array(p.translation) - centre)), p.scale * scale)
            for p in parts]


def surface_points(spec: PrimitiveSpec, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`count` points on the shape's outer surface and their unit normals, [count, 3] each (float32)."""
    import trimesh

    meshes = [p.mesh() for p in spec.parts]
    points, normals = [], []
    while sum(len(p) for p in points) < count:
        for i, mesh in enumerate(meshes):
            n = max(8, int(2 * count * mesh.area / sum(m.area for m in meshes)))
            sample, faces = trimesh.sample.sample_surface(mesh, n, seed=int(rng.integers(2 ** 31)))
            visible = np.ones(len(sample), dtype=bool)
            for j, other in enumerate(spec.parts):
                if j != i:
                    visible &= ~other.contains(sample)
            points.append(sample[visible])
            normals.append(mesh.face_normals[faces][visible])
    points, normals = np.concatenate(points), np.concatenate(normals)
    pick = rng.permutation(len(points))[:count]
    return points[pick].astype(np.float32), normals[pick].astype(np.float32)


def query_points(spec: PrimitiveSpec, num_uniform: int, num_near: int, rng: np.random.Generator,
                 sigma: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy training queries: uniform in [-1, 1]^3 plus points jittered (N(0, sigma)) around the
    surface; -> (points [Q, 3] float32, occupancy [Q] float32 in {0, 1})."""
    near, _ = surface_points(spec, num_near, rng)
    near = near + rng.normal(scale=sigma, size=near.shape)
    uniform = rng.uniform(-1, 1, size=(num_uniform, 3))
    points = np.concatenate([uniform, near]).astype(np.float32)
    return points, spec.contains(points).astype(np.float32)


class PrimitivesDataset(torch.utils.data.Dataset):
    """Items {"points", "normals" [num_points, 3], "queries" [Q, 3], "occupancy" [Q], "label"} of a fixed
    split; item i of a split is always the same shape (seeded by split and index)."""

    def __init__(self, split: str = "train", num_points: int = 2048, num_uniform: int = 1024, num_near: int = 1024,
                 length: int | None = None, category: str | None = None):
        if split not in SPLIT_SEEDS:
            raise ValueError(f"unknown split {split!r}; pick one of {list(SPLIT_SEEDS)}.")
        if category is not None and category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; pick one of {CATEGORIES}.")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}.")
        self.split, self.category = split, category
        self.num_points, self.num_uniform, self.num_near = num_points, num_uniform, num_near
        self.length = SPLIT_SIZES[split] if length is None else length

    def __len__(self) -> int:
        return self.length

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([SPLIT_SEEDS[self.split], index, 7919])

    def spec(self, index: int) -> PrimitiveSpec:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a split of {self.length}.")
        return sample_spec(self.rng(index), self.category)

    def __getitem__(self, index: int) -> dict:
        spec, rng = self.spec(index), self.rng(index + 10 ** 9)
        points, normals = surface_points(spec, self.num_points, rng)
        queries, occupancy = query_points(spec, self.num_uniform, self.num_near, rng)
        return {"points": torch.from_numpy(points), "normals": torch.from_numpy(normals),
                "queries": torch.from_numpy(queries), "occupancy": torch.from_numpy(occupancy), "label": spec.label}


def cache_primitives(path, split: str, count: int, num_points: int = 2048, num_uniform: int = 2048,
                     num_near: int = 2048, progress: bool = True):
    """Draw the first `count` shapes of a split once and store them (float16) in a safetensors file:
    points, normals [count, num_points, 3], queries [count, Q, 3], occupancy [count, Q] (uint8), labels."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from zoo.utils.io import atomic_path

    data = PrimitivesDataset(split, num_points, num_uniform, num_near, length=count)
    items = [data[i] for i in tqdm(range(count), desc=f"primitives {split}", disable=not progress)]
    tensors = {"points": torch.stack([x["points"] for x in items]).half(),
               "normals": torch.stack([x["normals"] for x in items]).half(),
               "queries": torch.stack([x["queries"] for x in items]).half(),
               "occupancy": torch.stack([x["occupancy"] for x in items]).to(torch.uint8),
               "labels": torch.tensor([x["label"] for x in items])}
    metadata = {"split": split, "count": str(count), "num_points": str(num_points), "num_uniform": str(num_uniform),
                "num_near": str(num_near)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


class CachedPrimitives(torch.utils.data.Dataset):
    """Shapes from `cache_primitives`, each item a random subset of its points and queries (a fresh
    subset every time: augmentation for free). Items as `PrimitivesDataset`'s, in float32."""

    def __init__(self, path, num_points: int = 1024, num_queries: int = 1024, seed: int = 0):
        from safetensors.torch import load_file

        self.tensors = load_file(path)
        stored_points, stored_queries = self.tensors["points"].shape[1], self.tensors["queries"].shape[1]
        if num_points > stored_points or num_queries > stored_queries:
            raise ValueError(f"{path} holds {stored_points} points and {stored_queries} queries per shape; "
                             f"asked for {num_points} and {num_queries}.")
        self.num_points, self.num_queries = num_points, num_queries
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.tensors["labels"])

    def __getitem__(self, index: int) -> dict:
        t = self.tensors
        points = torch.randperm(t["points"].shape[1], generator=self.generator)[: self.num_points]
        queries = torch.randperm(t["queries"].shape[1], generator=self.generator)[: self.num_queries]
        return {"points": t["points"][index, points].float(), "normals": t["normals"][index, points].float(),
                "queries": t["queries"][index, queries].float(), "occupancy": t["occupancy"][index, queries].float(),
                "label": int(t["labels"][index])}
