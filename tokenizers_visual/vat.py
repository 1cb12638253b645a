"""`VAT`: a 3D shape as a few hundred multi-scale tokens, decoded through a triplane to occupancy and a
mesh ("3D representation in 512-Byte", arXiv 2412.02202; no code is released, see
../shared/reference/tokenizers.md section 4).

    surface points + normals [B, N, 3+3] --Fourier features--> point tokens
    in-context transformer over [M learned latent tokens | point tokens] -> the latent outputs
    Gaussian mapping: mean, log-variance -> z = mean + std * eps (KL to N(0, I))
    variational multi-scale residual quantisation of z: token maps of 1, 2, 4, ... M tokens (VAR)
    decoder: [dequantised latents | learned triplane tokens] -> three feature planes (xy, xz, yz)
    occupancy MLP on the planes' features at query points -> logits; marching cubes -> trimesh mesh

What the paper leaves open (scale schedule, codebook sizes, triplane resolution, occupancy MLP, point
count) zoo chooses from its closest relatives and says so: Fourier features with 8 octaves and normals
as Michelangelo's SITA-VAE; VAR's quantiser (one shared codebook by default, per-scale as an option,
the refinement convolution phi with ratio 0.5); occupancy logits, as 3DShape2VecSet, and its evaluation
protocol (`zoo.metrics.shapes3d`).

    vat = VAT(...)
    ids = vat.encode(points, normals)             # list of [B, L_s] ids, coarse to fine
    mesh = vat.decode_mesh(ids[:6])               # any prefix of the scales decodes
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from zoo.nn.quantizers import MultiScaleResidualVQ, check_rate
from zoo.nn.vit import AdaLNHead, ViTBlock, mup_attention_scale
from zoo.utils.io import AtomicSaveMixin


def farthest_point_sample(points: torch.Tensor, count: int) -> torch.Tensor:
    """Farthest point sampling: [B, N, 3] -> indices [B, count], starting from each cloud's first point
    (deterministic for a given point order)."""
    B, N, _ = points.shape
    if not 1 <= count <= N:
        raise ValueError(f"cannot pick {count} centres from {N} points; pass at least {count} points.")
    picked = torch.zeros(B, count, dtype=torch.long, device=points.device)
    distance = torch.full((B, N), float("inf"), device=points.device)
    last = points[:, 0]
    for i in range(1, count):
        distance = torch.minimum(distance, (points - last[:, None]).pow(2).sum(-1))
        picked[:, i] = distance.argmax(1)
        last = points[torch.arange(B), picked[:, i]]
    return picked


def morton_order(points: torch.Tensor, bits: int = 4) -> torch.Tensor:
    """[B, M, 3] in [-1, 1] -> a permutation [B, M] sorting each set along the Z-order curve, so that
    neighbouring tokens are neighbours in space (and VAR's coarse scales average local regions)."""
    cells = ((points.clamp(-1, 1) + 1) / 2 * (2 ** bits - 1)).round().long()  # [B, M, 3]
    code = torch.zeros_like(cells[..., 0])
    for bit in range(bits):
        for axis in range(3):
            code |= ((cells[..., axis] >> bit) & 1) << (3 * bit + axis)
    return code.argsort(dim=1, stable=True)


def fourier_features(xyz: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """[..., 3] -> [..., 3 + 6 * num_freqs]: the coordinates, then sin and cos of pi * 2^k * xyz."""
    freqs = math.pi * 2.0 ** torch.arange(num_freqs, device=xyz.device, dtype=xyz.dtype)
    angles = (xyz[..., None] * freqs).flatten(-2)  # [..., 3 * F]
    return torch.cat([xyz, angles.sin(), angles.cos()], dim=-1)


class VAT(AtomicSaveMixin, ModelMixin, ConfigMixin):
    """Variational tokenizer of 3D shapes.

    Args:
        num_latents: M, the latent tokens (and the last scale's length).
        latent_dim: size of each latent (and codeword).
        scales: tokens per scale, increasing, ending at num_latents (default 1, 2, 4, ..., M).
        codebook_size, shared_codebook: the quantiser's codebook(s).
        commitment: where the quantiser's commitment loss compares (`MultiScaleResidualVQ`): "last_scale"
            (default) or VAR's "every_scale". Under VAR's rule the 64 latents of a shape came out nearly
            the same vector (std across a shape's tokens 0.02, across shapes 0.2) and the 4,000-shape
            training stalled at a mean shape; the first scales' f_hat of one or two tokens pulled every
            token toward their mean (with no quantiser loss at all, the std stayed at 0.14 after 100 steps
            on 16 shapes). Last-scale commitment alone did not stop the collapse from step 0 (std 0.03
            after 1,000 steps); `zoo train vat-primitives` also starts with a VAE phase (`commit=False`).
        width, encoder_depth, decoder_depth, head_dim: the transformers.
        num_freqs: Fourier octaves of the point coordinates.
        use_normals: feed surface normals with the points (VAT does).
        point_queries: add to each learned latent token the embedding of one of M surface points picked
            by farthest point sampling and ordered along a Z-order curve (3DShape2VecSet's point queries).
            VAT's paper uses learned tokens only; point queries give each latent a place on the surface
            from the start.
        triplane_resolution, triplane_patch, triplane_channels: each plane is resolution^2 features of
            `triplane_channels`, produced by (resolution / patch)^2 learned tokens.
        mlp_hidden: width of the occupancy MLP.

    Examples:
        >>> from zoo.data.primitives import PrimitivesDataset
        >>> vat = VAT(num_latents=8, latent_dim=8, codebook_size=32, width=64, encoder_depth=1, decoder_depth=1,
        ...           head_dim=32, triplane_resolution=16, triplane_patch=4, triplane_channels=16, mlp_hidden=32)
        >>> item = PrimitivesDataset("test", num_points=256)[0]
        >>> ids = vat.encode(item["points"][None], item["normals"][None])
        >>> [i.shape[1] for i in ids], vat.num_bytes()          # 1 + 2 + 4 + 8 tokens of 5 bits
        ([1, 2, 4, 8], 9.375)
        >>> meshes = vat.decode_mesh(ids[:2], resolution=33)   # any prefix of the scales  # doctest: +SKIP
    """

    @register_to_config
    def __init__(
        self,
        num_latents: int = 128,
        latent_dim: int = 16,
        scales: list[int] | None = None,
        codebook_size: int = 1024,
        shared_codebook: bool = True,
        commitment: str = "last_scale",
        width: int = 256,
        encoder_depth: int = 4,
        decoder_depth: int = 4,
        head_dim: int = 64,
        num_freqs: int = 8,
        use_normals: bool = True,
        point_queries: bool = False,
        triplane_resolution: int = 32,
        triplane_patch: int = 4,
        triplane_channels: int = 32,
        mlp_hidden: int = 128,
    ):
        super().__init__()
        scales = list(scales or [2 ** i for i in range(int(math.log2(num_latents)) + 1)])
        if scales[-1] != num_latents:
            raise ValueError(f"the last scale must hold all num_latents={num_latents} tokens, got scales {scales}.")
        if triplane_resolution % triplane_patch:
            raise ValueError(f"triplane_resolution={triplane_resolution} must be a multiple of "
                             f"triplane_patch={triplane_patch}.")
        if width % head_dim:
            raise ValueError(f"width={width} is not a multiple of head_dim={head_dim}.")
        heads, scale = width // head_dim, mup_attention_scale(head_dim)
        point_dim = 3 + 6 * num_freqs + (3 if use_normals else 0)
        self.point_proj = nn.Linear(point_dim, width)
        self.latent_tokens = nn.Parameter(torch.empty(num_latents, width))
        self.encoder = nn.ModuleList(ViTBlock(width, heads, scale=scale) for _ in range(encoder_depth))
        self.to_gaussian = AdaLNHead(width, 2 * latent_dim)
        self.quantizer = MultiScaleResidualVQ(latent_dim, scales, codebook_size, shared_codebook,
                                              commitment=commitment)

        tokens_per_plane = (triplane_resolution // triplane_patch) ** 2
        self.from_latents = nn.Linear(latent_dim, width)
        self.latent_posemb = nn.Parameter(torch.empty(num_latents, width))
        self.triplane_tokens = nn.Parameter(torch.empty(3 * tokens_per_plane, width))
        self.decoder = nn.ModuleList(ViTBlock(width, heads, scale=scale) for _ in range(decoder_depth))
        self.to_planes = AdaLNHead(width, triplane_channels * triplane_patch ** 2)
        self.occupancy_mlp = nn.Sequential(
            nn.Linear(triplane_channels, mlp_hidden), nn.SiLU(), nn.Linear(mlp_hidden, mlp_hidden), nn.SiLU(),
            nn.Linear(mlp_hidden, 1))
        for p in (self.latent_tokens, self.latent_posemb, self.triplane_tokens):
            nn.init.trunc_normal_(p, std=0.02)

    # ------------------------------------------------------------------ sizes
    @property
    def scales(self) -> list[int]:
        return self.quantizer.scales

    @property
    def bits_per_token(self) -> int:
        return math.ceil(math.log2(self.config.codebook_size))

    def num_bytes(self, num_scales: int | None = None) -> float:
        """Storage of one shape coded with the first `num_scales` scales: tokens x bits per token / 8."""
        return sum(self.scales[: num_scales or len(self.scales)]) * self.bits_per_token / 8

    # ------------------------------------------------------------------ checks
    def check_points(self, points: torch.Tensor, normals: torch.Tensor | None):
        if not isinstance(points, torch.Tensor) or points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be a [B, N, 3] tensor in [-1, 1], got "
                             f"{type(points).__name__} {tuple(getattr(points, 'shape', ()))}.")
        if points.shape[0] == 0 or points.shape[1] == 0:
            raise ValueError(f"the point clouds are empty ({tuple(points.shape)}); pass at least one point per shape.")
        if not torch.isfinite(points).all():
            raise ValueError("points contain NaN or infinite coordinates.")
        if self.config.use_normals:
            if normals is None:
                raise ValueError("this VAT reads surface normals: pass normals [B, N, 3] with the points.")
            if normals.shape != points.shape or not torch.isfinite(normals).all():
                raise ValueError(f"normals must be finite and shaped like the points {tuple(points.shape)}, got "
                                 f"{tuple(normals.shape)}.")

    # ------------------------------------------------------------------ encoder
    def encode_gaussian(self, points: torch.Tensor, normals: torch.Tensor | None):
        """-> (mean, log-variance), each [B, M, latent_dim]."""
        features = [fourier_features(points, self.config.num_freqs)]
        if self.config.use_normals:
            features.append(normals)
        x = self.point_proj(torch.cat(features, dim=-1).to(self.dtype))
        x = torch.cat([self.latent_queries(points, x), x], dim=1)
        for block in self.encoder:
            x = block(x)
        mean, logvar = self.to_gaussian(x[:, :self.config.num_latents]).chunk(2, dim=-1)
        return mean, logvar.clamp(-30, 20)

    def query_centres(self, points: torch.Tensor) -> torch.Tensor:
        """The surface points behind the latent queries: indices [B, M] into each cloud (farthest point
        sampling, then Z-order)."""
        centres = farthest_point_sample(points, self.config.num_latents)
        return centres.gather(1, morton_order(points.gather(1, centres[..., None].expand(-1, -1, 3))))

    def latent_queries(self, points: torch.Tensor, point_tokens: torch.Tensor) -> torch.Tensor:
        """[B, M, width]: the learned latent tokens, plus with `point_queries` the point tokens [B, N, width]
        of the query centres."""
        queries = self.latent_tokens.expand(points.shape[0], -1, -1)
        if not self.config.point_queries:
            return queries
        centres = self.query_centres(points)
        return queries + point_tokens.gather(1, centres[..., None].expand(-1, -1, point_tokens.shape[-1]))

    @torch.no_grad()
    def encode(self, points: torch.Tensor, normals: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Surface points [B, N, 3] (and normals) -> token ids per scale: a list of [B, L_s], coarse to fine.
        Encoding uses the Gaussian's mean."""
        self.check_points(points, normals)
        mean, _ = self.encode_gaussian(points, normals)
        return self.quantizer.encode(mean)

    # ------------------------------------------------------------------ decoder
    def triplane(self, latents: torch.Tensor) -> torch.Tensor:
        """Dequantised latents [B, M, latent_dim] -> planes [B, 3, C, R, R] (xy, xz, yz)."""
        B, M = latents.shape[:2]
        x = torch.cat([self.from_latents(latents) + self.latent_posemb, self.triplane_tokens.expand(B, -1, -1)], 1)
        for block in self.decoder:
            x = block(x)
        c = self.config
        n, p = c.triplane_resolution // c.triplane_patch, c.triplane_patch
        planes = self.to_planes(x[:, M:]).view(B, 3, n, n, p, p, c.triplane_channels)
        return planes.permute(0, 1, 6, 2, 4, 3, 5).reshape(B, 3, c.triplane_channels, n * p, n * p)

    def occupancy_logits(self, planes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """planes [B, 3, C, R, R], queries [B, Q, 3] in [-1, 1] -> occupancy logits [B, Q] (the planes'
        bilinear features summed, then the MLP)."""
        B = planes.shape[0]
        if queries.dim() != 3 or queries.shape[0] != B or queries.shape[-1] != 3:
            raise ValueError(f"queries must be [{B}, Q, 3] points in [-1, 1], got {tuple(queries.shape)}.")
        if not torch.isfinite(queries).all():
            raise ValueError("queries contain NaN or infinite coordinates.")
        coords = torch.stack([queries[..., [0, 1]], queries[..., [0, 2]], queries[..., [1, 2]]], dim=1)  # [B, 3, Q, 2]
        sampled = F.grid_sample(planes.flatten(0, 1), coords.flatten(0, 1)[:, :, None].to(planes.dtype),
                                mode="bilinear", padding_mode="border", align_corners=True)  # [3B, C, Q, 1]
        features = sampled[..., 0].view(B, 3, planes.shape[2], -1).sum(1).transpose(1, 2)  # [B, Q, C]
        return self.occupancy_mlp(features)[..., 0]

    def decode(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """Token ids of the first k scales -> planes [B, 3, C, R, R]."""
        return self.triplane(self.quantizer.decode(ids))

    @torch.no_grad()
    def decode_occupancy(self, ids: list[torch.Tensor]):
        """Token ids -> the occupancy function: a callable from queries [B, Q, 3] in [-1, 1] to logits [B, Q]
        (inside where >= 0)."""
        planes = self.decode(ids)
        return lambda queries: self.occupancy_logits(planes, queries.to(planes.device, planes.dtype))

    @torch.no_grad()
    def occupancy_grid(self, planes: torch.Tensor, resolution: int = 129, chunk: int = 65536) -> torch.Tensor:
        """Occupancy logits on a resolution^3 grid over [-1, 1]^3: [B, res, res, res] (x, y, z order)."""
        axis = torch.linspace(-1, 1, resolution, device=planes.device)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).view(-1, 3)
        logits = [self.occupancy_logits(planes, part.expand(planes.shape[0], -1, -1)) for part in grid.split(chunk)]
        return torch.cat(logits, dim=1).view(-1, resolution, resolution, resolution)

    @torch.no_grad()
    def decode_mesh(self, ids: list[torch.Tensor], resolution: int = 129) -> list:
        """Token ids -> one trimesh mesh per shape: marching cubes at level 0 of the occupancy logits on a
        resolution^3 grid over [-1, 1]^3 (3DShape2VecSet's protocol). A shape whose logits never cross 0
        gives an empty mesh."""
        return self.planes_to_meshes(self.decode(ids), resolution)

    @torch.no_grad()
    def planes_to_meshes(self, planes: torch.Tensor, resolution: int = 129) -> list:
        """Decoded planes [B, 3, C, R, R] -> one mesh per shape (marching cubes, as `decode_mesh`)."""
        return [logits_to_mesh(grid.float().cpu().numpy()) for grid in self.occupancy_grid(planes, resolution)]

    # ------------------------------------------------------------------ training
    def forward(self, points, normals, queries, occupancy=None, no_quantization_rate: float = 0.0,
                commit: bool = True, prefix_rate: float = 0.0):
        """Training: -> dict with occupancy logits [B, Q], the KL, the quantiser loss and residual norms;
        with `occupancy` [B, Q] also the BCE. In training, each shape skips quantisation (the decoder reads
        the continuous latents) with probability `no_quantization_rate`, as Mimi trains its quantiser
        (moshi's `no_quantization_rate`, 0.5): the encoder and decoder learn without the quantiser's
        noise half of the time; the quantiser's losses are computed on every shape. Each quantised shape
        is decoded from a random prefix of the scales (1..S kept, uniform) with probability
        `prefix_rate`, so that the decoder learns to read the coarse f_hat of a small token budget too
        (FlexTok's nested dropout, on scales; VAT decodes prefixes but says nothing of its training, so
        this is zoo's choice). With `commit=False` the quantiser reads detached latents: its codebook
        follows them, but no commitment loss pulls the encoder toward the codewords (the VAE warm-up of
        `zoo train vat-primitives`)."""
        for name, rate in [("no_quantization_rate", no_quantization_rate), ("prefix_rate", prefix_rate)]:
            check_rate(name, rate)
        mean, logvar = self.encode_gaussian(points, normals)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        z_hat, ids, vq_loss, residuals = self.quantizer(z if commit else z.detach())
        if self.training and prefix_rate > 0:
            z_hat = self.decode_random_prefixes(z, z_hat, ids, prefix_rate)
        if self.training and no_quantization_rate > 0:
            skip = torch.rand(z.shape[0], 1, 1, device=z.device) < no_quantization_rate
            z_hat = torch.where(skip, z, z_hat)
        logits = self.occupancy_logits(self.triplane(z_hat), queries)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        out = {"logits": logits, "kl": kl, "vq": vq_loss, "residuals": residuals, "ids": ids}
        if occupancy is not None:
            out["bce"] = F.binary_cross_entropy_with_logits(logits, occupancy)
        return out

    def decode_random_prefixes(self, z, z_hat, ids, rate: float) -> torch.Tensor:
        """z_hat [B, M, C] with each shape's, at probability `rate`, replaced by the f_hat of its first
        k scales (k uniform in 1..S), straight through to z as the full f_hat is."""
        batch, num_scales = z.shape[0], len(ids)
        kept = torch.randint(1, num_scales + 1, (batch,), device=z.device)
        kept = torch.where(torch.rand(batch, device=z.device) < rate, kept, num_scales)
        coarse = self.quantizer.prefix_reconstructions(ids)[kept - 1, torch.arange(batch, device=z.device)]
        return torch.where((kept < num_scales)[:, None, None], z + (coarse - z).detach(), z_hat)


def logits_to_mesh(logits: np.ndarray):
    """Occupancy logits on a res^3 grid over [-1, 1]^3 -> a trimesh mesh (marching cubes at level 0)."""
    import trimesh
    from skimage.measure import marching_cubes

    res = logits.shape[0]
    if logits.max() <= 0 or logits.min() >= 0:
        return trimesh.Trimesh()
    vertices, faces, _, _ = marching_cubes(logits, level=0.0)
    vertices = vertices / (res - 1) * 2 - 1
    return trimesh.Trimesh(vertices, faces[:, ::-1], process=False)  # outward normals for logits > 0 inside
