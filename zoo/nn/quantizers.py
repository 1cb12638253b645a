"""Quantizers shared by zoo's tokenizers: the nearest-codeword VQ (images), EMA codebooks with
residual and split-residual quantisation (the speech codec), and finite scalar quantisation (FSQ,
the 1D tokenizers)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """VQ-VAE quantizer: each vector goes to its nearest codeword; straight-through gradients.

    With `l2_norm` (LlamaGen, ViT-VQGAN) vectors and codewords are l2-normalised before the search
    and the normalised codeword is returned, so the code space is the unit sphere.

    Args:
        num_codes: codebook size K.  code_dim: codeword size C.
        beta: weight of the commitment loss (encoder towards codes).
    """

    def __init__(self, num_codes: int, code_dim: int, l2_norm: bool = True, beta: float = 0.25):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be >= 1, got {num_codes}, {code_dim}.")
        self.num_codes, self.code_dim, self.l2_norm, self.beta = num_codes, code_dim, l2_norm, beta
        self.embedding = nn.Embedding(num_codes, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)
        # training statistics for dead-code restarts (not saved): uses per code, and the latest inputs
        self.register_buffer("usage", torch.zeros(num_codes, dtype=torch.long), persistent=False)
        self.recent_inputs: torch.Tensor | None = None

    @property
    def codebook(self) -> torch.Tensor:
        """The codewords as the decoder sees them: [K, C] (unit vectors with l2_norm)."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.l2_norm else weight

    def nearest(self, z: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """Index of the nearest codeword for each vector z [..., C] -> [...] (chunked over vectors)."""
        flat = z.reshape(-1, self.code_dim)
        if self.l2_norm:
            flat = F.normalize(flat, dim=-1)
        codebook = self.codebook
        code_sq = codebook.pow(2).sum(-1)
        ids = [
            (part.pow(2).sum(-1, keepdim=True) + code_sq - 2 * part @ codebook.t()).argmin(-1)
            for part in flat.split(chunk)
        ]
        return torch.cat(ids).view(z.shape[:-1])

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Codewords of ids [...] -> [..., C]."""
        return F.embedding(ids, self.codebook)

    def forward(self, z: torch.Tensor):
        """z [B, C, H, W] -> (z_q [B, C, H, W] with straight-through gradients, ids [B, H, W], losses).

        losses: "codebook" (codes towards the encoder) and "commitment" (beta * encoder towards codes),
        computed only in training; LlamaGen's VectorQuantizer.
        """
        z = z.permute(0, 2, 3, 1)  # [B, H, W, C]
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        ids = self.nearest(z)
        z_q = self.embed(ids)
        losses = {}
        if self.training:
            self.usage += torch.bincount(ids.flatten(), minlength=self.num_codes)
            self.recent_inputs = z.detach().reshape(-1, self.code_dim)
            losses["codebook"] = F.mse_loss(z_q, z.detach())
            losses["commitment"] = self.beta * F.mse_loss(z, z_q.detach())
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2), ids, losses

    @torch.no_grad()
    def restart_dead_codes(self, candidates: torch.Tensor, usage: torch.Tensor | None = None,
                           generator: torch.Generator | None = None) -> int:
        """Move every code unused since the last restart onto a random candidate input vector
        (candidates [N, C], e.g. `recent_inputs`); reset the usage counts. Returns the number moved.

        usage: the counts to judge by (pass the sum over processes under data parallelism).
        """
        usage = self.usage if usage is None else usage
        dead = (usage == 0).nonzero().flatten()
        if len(dead) and len(candidates):
            pick = torch.randint(len(candidates), (len(dead),), generator=generator, device=candidates.device)
            vectors = candidates[pick].to(self.embedding.weight)
            self.embedding.weight[dead] = F.normalize(vectors, dim=-1) if self.l2_norm else vectors
        self.usage.zero_()
        return len(dead)

    def usage_stats(self, usage: torch.Tensor | None = None) -> dict:
        """Share of codes used and the perplexity of the code distribution (from the usage counts)."""
        usage = (self.usage if usage is None else usage).float()
        probs = usage / usage.sum().clamp(min=1)
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
        return {"codebook_usage": (usage > 0).float().mean().item(), "perplexity": entropy.exp().item()}


def check_rate(name: str, rate: float):
    """Raise unless `rate` is a probability (a number in [0, 1])."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {rate!r}.")


def _cluster_sums(ids: torch.Tensor, x: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Sum of the vectors x [N, D] assigned to each cluster -> [K, D]. A one-hot matmul: on CPU,
    index_add_ (a scatter) is some 30x slower at these sizes."""
    return F.one_hot(ids, num_clusters).to(x.dtype).t() @ x


def kmeans(samples: torch.Tensor, num_clusters: int, iters: int = 50, generator: torch.Generator | None = None):
    """Lloyd's k-means on samples [N, D] -> (centroids [K, D], cluster sizes [K]); empty clusters are
    re-seeded from random samples at every iteration (EnCodec's / Mimi's codebook initialisation)."""

    def sample(num):
        if len(samples) >= num:
            return samples[torch.randperm(len(samples), generator=generator, device=samples.device)[:num]]
        return samples[torch.randint(len(samples), (num,), generator=generator, device=samples.device)]

    centroids, sizes = sample(num_clusters), None
    for _ in range(iters):
        ids = torch.cdist(samples[None], centroids[None])[0].argmin(-1)
        sizes = torch.bincount(ids, minlength=num_clusters)
        sums = _cluster_sums(ids, samples, num_clusters)
        centroids = torch.where((sizes == 0)[:, None], sample(num_clusters), sums / sizes.clamp(min=1)[:, None])
    return centroids, sizes


class EMACodebook(nn.Module):
    """A Euclidean codebook learnt by exponential moving averages, not by gradients (SoundStream,
    EnCodec, Mimi): each code is `embedding_sum / cluster_usage`, both EMAs of what the code was
    assigned. The first training batch initialises it by k-means; every `check_unused_every` training
    calls, codes whose usage fell below `threshold_usage_ratio` of a uniform share move onto random
    inputs of the batch (dead-code replacement).

    Buffers (the names of moshi's checkpoints): `embedding_sum` [K, D], `cluster_usage` [K], `initialized` [1].
    """

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5,
                 threshold_usage_ratio: float = 0.1, check_unused_every: int = 5, kmeans_iters: int = 50):
        super().__init__()
        if num_codes < 2 or dim < 1:
            raise ValueError(f"an EMA codebook needs num_codes >= 2 and dim >= 1, got {num_codes}, {dim}.")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        self.num_codes, self.dim, self.decay, self.epsilon = num_codes, dim, decay, epsilon
        self.threshold_usage_ratio, self.check_unused_every, self.kmeans_iters = (
            threshold_usage_ratio, check_unused_every, kmeans_iters)
        self._calls_to_check = check_unused_every
        self.register_buffer("embedding_sum", torch.zeros(num_codes, dim))
        self.register_buffer("cluster_usage", torch.ones(num_codes))
        self.register_buffer("initialized", torch.zeros(1))

    @property
    def embedding(self) -> torch.Tensor:
        """The codewords [K, D], recomputed only when the buffers changed (in-place updates, loading)."""
        key = (self.embedding_sum._version, self.cluster_usage._version, self.embedding_sum.data_ptr(),
               self.embedding_sum.dtype)
        if getattr(self, "_embedding_key", None) != key:
            self._embedding = self.embedding_sum / self.cluster_usage.clamp(min=self.epsilon)[:, None]
            self._embedding_key = key
        return self._embedding

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codeword (Euclidean) of each vector x [N, D] -> [N]."""
        return torch.cdist(x[None].float(), self.embedding[None].float())[0].argmin(-1)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding)

    def forward(self, x: torch.Tensor, initialize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] -> (codewords [N, D], ids [N]). In training mode the EMAs are updated with x."""
        if self.training and initialize and not self.initialized.item():
            centroids, sizes = kmeans(x.detach().float(), self.num_codes, self.kmeans_iters)
            self.embedding_sum.copy_(centroids * sizes[:, None])
            self.cluster_usage.copy_(sizes.float())
            self.initialized.fill_(1.0)
        ids = self.nearest(x)
        if self.training:
            self._update(x.detach().float(), ids)
        return self.embed(ids), ids

    @torch.no_grad()
    def _update(self, x: torch.Tensor, ids: torch.Tensor):
        if self.initialized.item():
            self._calls_to_check -= 1
            if self._calls_to_check <= 0:
                self._calls_to_check = self.check_unused_every
                self.replace_dead_codes(x)
        counts = torch.bincount(ids, minlength=self.num_codes).float()
        sums = _cluster_sums(ids, x, self.num_codes)
        self.cluster_usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embedding_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)

    @torch.no_grad()
    def replace_dead_codes(self, candidates: torch.Tensor) -> int:
        """Move codes used less than threshold_usage_ratio x a uniform share onto random candidates [N, D]."""
        uniform_share = self.cluster_usage.sum() / self.num_codes
        dead = self.cluster_usage < self.threshold_usage_ratio * uniform_share
        if dead.any() and len(candidates):
            picks = candidates[torch.randint(len(candidates), (self.num_codes,), device=candidates.device)]
            self.embedding_sum.copy_(torch.where(dead[:, None], uniform_share * picks, self.embedding_sum))
            self.cluster_usage.copy_(torch.where(dead, uniform_share, self.cluster_usage))
        return int(dead.sum())

    def usage_stats(self) -> dict:
        """Normalised entropy of the code usage EMA (1 = uniform) and the share of live codes."""
        probs = self.cluster_usage / self.cluster_usage.sum().clamp(min=self.epsilon)
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum() / math.log(self.num_codes)
        live = self.cluster_usage >= self.threshold_usage_ratio * self.cluster_usage.sum() / self.num_codes
        return {"entropy": entropy.item(), "live_codes": live.float().mean().item()}


class ResidualVQ(nn.Module):
    """Residual vector quantisation (SoundStream's Algorithm 1) over EMA codebooks, on [B, dim, T]
    latents: codebook i quantises what codebooks 0..i-1 left. `input_proj` / `output_proj` are
    bias-free 1x1 convolutions between the latent and the code space (Mimi), absent when the sizes match.
    """

    def __init__(self, dim: int, num_quantizers: int, num_codes: int, code_dim: int | None = None, **codebook_kwargs):
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}.")
        code_dim = code_dim or dim
        self.num_quantizers, self.num_codes = num_quantizers, num_codes
        self.input_proj = nn.Conv1d(dim, code_dim, 1, bias=False) if code_dim != dim else None
        self.output_proj = nn.Conv1d(code_dim, dim, 1, bias=False) if code_dim != dim else None
        self.codebooks = nn.ModuleList(EMACodebook(num_codes, code_dim, **codebook_kwargs) for _ in range(num_quantizers))

    def _project_in(self, x):  # [B, dim, T] -> [B*T, code_dim]
        x = self.input_proj(x) if self.input_proj is not None else x
        return x.transpose(1, 2).reshape(-1, x.shape[1])

    def _project_out(self, z, batch):  # [B*T, code_dim] -> [B, dim, T]
        z = z.view(batch, -1, z.shape[-1]).transpose(1, 2)
        return self.output_proj(z) if self.output_proj is not None else z

    def encode(self, x: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """x [B, dim, T] -> codes [B, n, T] with n = num_quantizers (default all)."""
        residual = self._project_in(x)
        codes = []
        for codebook in self.codebooks[: num_quantizers or self.num_quantizers]:
            ids = codebook.nearest(residual)
            residual = residual - codebook.embed(ids)
            codes.append(ids)
        return torch.stack(codes, 1).view(x.shape[0], x.shape[2], -1).transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, n, T] (n <= num_quantizers) -> the summed codewords, projected out: [B, dim, T]."""
        flat = codes.transpose(1, 2).reshape(-1, codes.shape[1])  # [B*T, n]
        z = sum(self.codebooks[i].embed(flat[:, i]) for i in range(codes.shape[1]))
        return self._project_out(z, codes.shape[0])

    def forward(self, x: torch.Tensor, num_quantizers: int | None = None, no_quantization_rate: float = 0.0):
        """Training / teacher-forced pass: x [B, dim, T] -> (quantized [B, dim, T] with straight-through
        gradients, codes [B, n, T], commitment loss). Each codebook's EMA sees its residual; a codebook is
        k-means-initialised only once the one before it is (moshi). In training, each sequence passes its
        projected latent through unquantised with probability `no_quantization_rate` (moshi's option of the
        name; the Moshi paper trains Mimi at 0.5): the codebooks and the commitment loss still see it."""
        check_rate("no_quantization_rate", no_quantization_rate)
        latent = self._project_in(x)
        residual, quantized = latent, torch.zeros_like(latent)
        codes, commitment, previous_ready = [], latent.new_zeros(()), True
        for codebook in self.codebooks[: num_quantizers or self.num_quantizers]:
            was_ready = bool(codebook.initialized.item())
            codewords, ids = codebook(residual, initialize=previous_ready)
            previous_ready = was_ready
            commitment = commitment + F.mse_loss(residual, codewords.detach())
            residual = residual - codewords.detach()
            quantized = quantized + codewords.detach()
            codes.append(ids)
        quantized = latent + (quantized - latent).detach()  # one straight-through estimator for the sum
        if self.training and no_quantization_rate > 0:
            skip = torch.rand(x.shape[0], 1, device=x.device) < no_quantization_rate  # [B, 1], one draw a sequence
            quantized = torch.where(skip.repeat_interleave(x.shape[2], dim=0), latent, quantized)
        commitment = commitment / len(codes)
        codes = torch.stack(codes, 1).view(x.shape[0], x.shape[2], -1).transpose(1, 2)
        return self._project_out(quantized, x.shape[0]), codes, commitment


class SplitResidualVQ(nn.Module):
    """Mimi's split RVQ: `semantic` (the first `num_semantic` codebooks) and `acoustic` (the rest) are
    two residual quantisers over the *same* latent, each with its own projections; their outputs are
    summed. Keeping them apart stops the semantic level from competing with the acoustic residual."""

    def __init__(self, dim: int, num_quantizers: int, num_codes: int, code_dim: int | None = None,
                 num_semantic: int = 1, **codebook_kwargs):
        super().__init__()
        if not 1 <= num_semantic < num_quantizers:
            raise ValueError(f"num_semantic must be in 1..{num_quantizers - 1}, got {num_semantic}.")
        self.num_quantizers, self.num_semantic, self.num_codes = num_quantizers, num_semantic, num_codes
        self.semantic = ResidualVQ(dim, num_semantic, num_codes, code_dim, **codebook_kwargs)
        self.acoustic = ResidualVQ(dim, num_quantizers - num_semantic, num_codes, code_dim, **codebook_kwargs)

    def check_num_quantizers(self, n: int | None) -> int:
        n = self.num_quantizers if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.num_quantizers:
            raise ValueError(f"the number of codebooks must be an int in 1..{self.num_quantizers}, got {n!r}.")
        return n

    def encode(self, x: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        n = self.check_num_quantizers(num_quantizers)
        codes = self.semantic.encode(x, min(n, self.num_semantic))
        if n > self.num_semantic:
            codes = torch.cat([codes, self.acoustic.encode(x, n - self.num_semantic)], dim=1)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        out = self.semantic.decode(codes[:, : self.num_semantic])
        if codes.shape[1] > self.num_semantic:
            out = out + self.acoustic.decode(codes[:, self.num_semantic:])
        return out

    def forward(self, x: torch.Tensor, num_quantizers: int | None = None, no_quantization_rate: float = 0.0):
        """-> (quantized, codes, commitment loss, semantic part of quantized) with straight-through gradients;
        `no_quantization_rate` as `ResidualVQ.forward`, drawn for each of the two quantisers (as moshi)."""
        n = self.check_num_quantizers(num_quantizers)
        semantic, codes, loss = self.semantic(x, min(n, self.num_semantic), no_quantization_rate)
        quantized = semantic
        if n > self.num_semantic:
            acoustic, acoustic_codes, acoustic_loss = self.acoustic(x, n - self.num_semantic, no_quantization_rate)
            quantized, codes, loss = semantic + acoustic, torch.cat([codes, acoustic_codes], 1), loss + acoustic_loss
        return quantized, codes, loss, semantic


class FSQ(nn.Module):
    """Finite scalar quantisation (Mentzer et al., arXiv 2309.15505) with FlexTok's index math.

    Each of the `len(levels)` channels is bounded by tanh and rounded to one of `levels[i]` values in
    [-1, 1] (straight-through gradients); a code is the mixed-radix number of its rounded channels,
    channel 0 the least significant digit: index = sum(digit_i * basis_i), basis = cumprod([1] +
    levels[:-1]), digit_i = (index // basis_i) % levels_i. FlexTok's levels [8, 8, 8, 5, 5, 5] give
    64,000 codes. No parameters.

    Args:
        levels: number of values per channel (each >= 2).
        drop_quant_p: while training, the probability that a sample skips the rounding (FlexTok's
            `drop_quant_p`); 0 at evaluation.
    """

    def __init__(self, levels: list[int] | tuple[int, ...] = (8, 8, 8, 5, 5, 5), drop_quant_p: float = 0.0):
        super().__init__()
        levels = list(levels)
        if not levels or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in levels):
            raise ValueError(f"FSQ levels must be a non-empty list of ints >= 2, got {levels!r}.")
        check_rate("drop_quant_p", drop_quant_p)
        self.levels, self.dim, self.drop_quant_p = levels, len(levels), drop_quant_p
        self.codebook_size = math.prod(levels)
        self.register_buffer("_levels", torch.tensor(levels), persistent=False)
        self.register_buffer("_basis", torch.cumprod(torch.tensor([1] + levels[:-1]), dim=0), persistent=False)

    def bound(self, z: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """tanh-bound each channel so that rounding gives exactly `levels` values (even levels are offset
        by a half so that zero stays a level)."""
        half = (self._levels - 1) * (1 + eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., dim] -> codes [..., dim] in [-1, 1] (straight-through rounding)."""
        self._check_channels(z)
        bounded = self.bound(z.float())
        rounded = bounded + (bounded.round() - bounded).detach()
        if self.training and self.drop_quant_p > 0:
            keep = torch.rand((z.shape[0],) + (1,) * (z.dim() - 1), device=z.device) < self.drop_quant_p
            rounded = torch.where(keep, bounded, rounded)
        return rounded / (self._levels // 2)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Rounded codes [..., dim] -> indices [...] (int64)."""
        self._check_channels(codes)
        half = self._levels // 2
        digits = (codes * half + half).round().long()
        return (digits * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices [...] -> codes [..., dim] in [-1, 1]."""
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"FSQ indices must be an integer tensor, got {indices.dtype}.")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"FSQ indices must be in [0, {self.codebook_size}); got values in "
                             f"[{int(indices.min())}, {int(indices.max())}].")
        digits = (indices.long()[..., None] // self._basis) % self._levels
        half = self._levels // 2
        return (digits - half).float() / half

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [..., dim] -> (codes [..., dim], indices [...])."""
        codes = self.quantize(z)
        return codes, self.codes_to_indices(codes.detach())

    def _check_channels(self, z: torch.Tensor):
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ with {self.dim} levels expects {self.dim} channels last, got shape "
                             f"{tuple(z.shape)}.")


class MultiScaleResidualVQ(nn.Module):
    """VAR's multi-scale residual quantisation (Tian et al., arXiv 2404.02905), over a 1D set of tokens.

    A feature sequence f [B, M, C] is coded as S token maps of growing length L_1 < ... < L_S = M: at
    scale s the residual f - f_hat is area-downsampled to L_s tokens, quantised to the nearest codewords,
    linearly upsampled back to M, refined by a small convolution phi_s (VAR's `Phi`, residual ratio
    0.5) and added to f_hat. Early scales carry the coarse shape, later ones the detail; decoding any
    prefix of the scales gives a coarser f_hat. VAT's VVQ quantises its sampled Gaussian latents this way.

    Args:
        dim: feature (and codeword) size C.  scales: token count per scale, increasing, last = M.
        num_codes: codebook size.  shared_codebook: one codebook for all scales (VAR) or one per scale.
        beta: commitment weight.
        commitment: "every_scale" pulls the features toward f_hat after every scale, as VAR's code does;
            "last_scale" only toward the final f_hat. After the first scales f_hat holds one or two
            tokens, so every-scale commitment penalises the differences between a set's tokens: VAT's
            latents collapsed to one vector per shape under it (measured, see tokenizers_visual/vat.py).
    """

    def __init__(self, dim: int, scales: list[int], num_codes: int, shared_codebook: bool = True,
                 beta: float = 0.25, phi_ratio: float = 0.5, commitment: str = "every_scale"):
        super().__init__()
        scales = list(scales)
        if not scales or any(b <= a for a, b in zip(scales, scales[1:])) or scales[0] < 1:
            raise ValueError(f"scales must be increasing positive token counts, got {scales}.")
        if commitment not in ("every_scale", "last_scale"):
            raise ValueError(f"commitment={commitment!r}; pass 'every_scale' (VAR) or 'last_scale'.")
        self.dim, self.scales, self.beta, self.phi_ratio = dim, scales, beta, phi_ratio
        self.commitment = commitment
        self.num_codes, self.shared_codebook = num_codes, shared_codebook
        self.codebooks = nn.ModuleList(VectorQuantizer(num_codes, dim, l2_norm=False, beta=beta)
                                       for _ in range(1 if shared_codebook else len(scales)))
        self.phi = nn.ModuleList(nn.Conv1d(dim, dim, 3, padding=1) for _ in scales)

    @property
    def num_tokens(self) -> int:
        return sum(self.scales)

    def codebook(self, scale: int) -> VectorQuantizer:
        return self.codebooks[0 if self.shared_codebook else scale]

    def resize(self, x: torch.Tensor, length: int, mode: str) -> torch.Tensor:
        """[B, L, C] -> [B, length, C] along the token axis."""
        if x.shape[1] == length:
            return x
        kwargs = {"align_corners": False} if mode == "linear" else {}
        return F.interpolate(x.transpose(1, 2), size=length, mode=mode, **kwargs).transpose(1, 2)

    def refine(self, codes: torch.Tensor, scale: int) -> torch.Tensor:
        """Upsample one scale's codewords [B, L_s, C] to [B, M, C] and apply phi_s."""
        up = self.resize(codes, self.scales[-1], "linear").transpose(1, 2)
        return (up * (1 - self.phi_ratio) + self.phi[scale](up) * self.phi_ratio).transpose(1, 2)

    def _check(self, f: torch.Tensor):
        if f.dim() != 3 or f.shape[1] != self.scales[-1] or f.shape[2] != self.dim:
            raise ValueError(f"expected features [B, {self.scales[-1]}, {self.dim}], got {tuple(f.shape)}.")

    def forward(self, f: torch.Tensor):
        """f [B, M, C] -> (f_hat with straight-through gradients, ids: list of [B, L_s], loss, residual norms [S])."""
        self._check(f)
        f_hat, ids, loss, norms = torch.zeros_like(f), [], f.new_zeros(()), []
        for s, length in enumerate(self.scales):
            residual = self.resize(f.detach() - f_hat.detach(), length, "area")
            norms.append(residual.norm(dim=-1).mean())
            quantizer = self.codebook(s)
            idx = quantizer.nearest(residual)
            if self.training:
                quantizer.usage += torch.bincount(idx.flatten(), minlength=self.num_codes)
                quantizer.recent_inputs = residual.reshape(-1, self.dim)
            f_hat = f_hat + self.refine(quantizer.embed(idx), s)
            loss = loss + F.mse_loss(f_hat, f.detach())
            if self.commitment == "every_scale":
                loss = loss + self.beta * F.mse_loss(f, f_hat.detach())
            ids.append(idx)
        loss = loss / len(self.scales)
        if self.commitment == "last_scale":
            loss = loss + self.beta * F.mse_loss(f, f_hat.detach())
        return f + (f_hat - f).detach(), ids, loss, torch.stack(norms)

    def encode(self, f: torch.Tensor) -> list[torch.Tensor]:
        return self.forward(f)[1]

    def prefix_reconstructions(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """Token maps of the first k scales (any k >= 1) -> f_hat from the first 1, 2, ..., k of them
        [k, B, M, C]: what a decoder reads when only a prefix of the scales is kept."""
        if not 1 <= len(ids) <= len(self.scales):
            raise ValueError(f"pass the ids of 1..{len(self.scales)} scales, got {len(ids)}.")
        f_hat, prefixes = 0, []
        for s, idx in enumerate(ids):
            if idx.dim() != 2 or idx.shape[1] != self.scales[s]:
                raise ValueError(f"scale {s} takes ids [B, {self.scales[s]}], got {tuple(idx.shape)}.")
            if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_codes):
                raise ValueError(f"token ids must lie in [0, {self.num_codes}).")
            f_hat = f_hat + self.refine(self.codebook(s).embed(idx), s)
            prefixes.append(f_hat)
        return torch.stack(prefixes)

    def decode(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """Token maps of the first k scales (any k >= 1) -> f_hat [B, M, C] from those scales only."""
        return self.prefix_reconstructions(ids)[-1]

    def next_scale_input(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """VAR's AR input: f_hat of the given scales, area-resized to the next scale's length
        [B, L_{k+1}, C] (what the AR model reads to predict scale k+1)."""
        return self.resize(self.decode(ids), self.scales[len(ids)], "area")

    def teacher_forcing_inputs(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """The AR model's whole input sequence for all scales' ids: the next-scale inputs of scales 2..S
        concatenated [B, sum(L_2..L_S), C] (scale 1 is predicted from the condition alone)."""
        prefixes = self.prefix_reconstructions(ids[:-1])
        return torch.cat([self.resize(f_hat, self.scales[s + 1], "area") for s, f_hat in enumerate(prefixes)], dim=1)
