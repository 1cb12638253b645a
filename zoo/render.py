"""A dependency-free preview of a mesh as a PIL image (for notebooks, the README and `zoo generate`).

trimesh's own renderer needs OpenGL (pyglet), which headless machines lack. This one rotates the mesh
to a fixed three-quarter view, projects it orthographically and paints the triangles back to front
(painter's algorithm) with Lambert shading: enough to see what a shape is, in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw


def _rotation(elevation: float, azimuth: float) -> np.ndarray:
    a, e = math.radians(azimuth), math.radians(elevation)
    around_z = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    tilt = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    return tilt @ around_z


def render_mesh(mesh, size: int = 256, elevation: float = 25.0, azimuth: float = 35.0,
                color=(90, 140, 220), background=(255, 255, 255)) -> Image.Image:
    """A shaded view of a trimesh mesh in [-1, 1]^3 (z up) as a size x size RGB image; an empty mesh gives a
    blank image."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int >= 16, got {size!r}.")
    image = Image.new("RGB", (size, size), background)
    if mesh is None or len(getattr(mesh, "faces", ())) == 0:
        return image
    # view space: x right, y into the screen (depth), z up
    vertices = np.asarray(mesh.vertices) @ _rotation(elevation, azimuth).T
    triangles = vertices[np.asarray(mesh.faces)]  # [F, 3, 3]
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    facing = normals[:, 1] < 0  # towards the viewer (who looks along +y)
    light = np.array([-0.4, -0.8, 0.45]) / np.linalg.norm([-0.4, -0.8, 0.45])
    shade = 0.25 + 0.75 * np.clip(normals @ light, 0, 1)
    order = np.argsort(-triangles[:, :, 1].mean(1))  # far to near
    scale = size / 2.3
    draw = ImageDraw.Draw(image)
    for f in order:
        if not facing[f]:
            continue
        xy = [(size / 2 + scale * x, size / 2 - scale * z) for x, _, z in triangles[f]]
        fill = tuple(int(c * shade[f]) for c in color)
        draw.polygon(xy, fill=fill, outline=fill)
    return image


def render_grid(meshes, size: int = 192) -> Image.Image:
    """Previews of several meshes side by side, in an about-square grid."""
    from .display import image_grid

    meshes = list(meshes)
    if not meshes:
        raise ValueError("pass at least one mesh.")
    return image_grid([render_mesh(mesh, size) for mesh in meshes])
