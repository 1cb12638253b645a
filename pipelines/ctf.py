"""`CTFPipeline`: coarse-to-fine token prediction (Guo et al., arXiv 2503.16194).

Stage 1 samples a grid of coarse labels (clusters of VQ codewords) autoregressively, exactly as
the baseline samples tokens but over a vocabulary of k clusters. Stage 2 (the auxiliary model) reads
the whole coarse grid and the class in one bidirectional pass and predicts the fine label (codebook
id) of every position; the VQ decoder turns the fine grid into pixels: "256 + 1" steps.
"""

from __future__ import annotations

import torch
from diffusers.image_processor import VaeImageProcessor

from tokenizers_visual import CodeClusters, VQModel
from zoo.ar import ARTransformer
from zoo.ar.sampling import check_sampling_args, logits_to_probs, normalize_generators, sample_from_probs

from .ar_image import ClassImagePipeline


class CTFPipeline(ClassImagePipeline):
    """Class-conditional CTF: `transformer` over coarse labels, `refiner` from coarse to fine labels.

    Args:
        transformer: causal `ARTransformer` over `clusters.config.num_clusters` coarse labels.
        refiner: bidirectional `ARTransformer` reading coarse labels (`input_vocab_size` = k) and
            predicting codebook ids (`vocab_size` = codebook size) at every position.
        clusters: the code-to-cluster table the models were trained with.
        vqvae: the tokenizer.
        class_names: optional names of the classes.
        mask_fine_logits: restrict the refiner's logits to the members of each position's cluster
            (the paper leaves this open; the recipe trains with the same setting).

    >>> pipe = zoo.load("ctf-shapes")                                                     # doctest: +SKIP
    >>> images = pipe(class_labels=["circle", 3], guidance_scale=2.0, temperature=1.1).images  # doctest: +SKIP
    """

    model_cpu_offload_seq = "transformer->refiner->vqvae"
    _callback_tensor_inputs = ["tokens"]

    def __init__(self, transformer: ARTransformer, refiner: ARTransformer, clusters: CodeClusters, vqvae: VQModel,
                 class_names: list[str] | None = None, mask_fine_logits: bool = True):
        super().__init__()
        self.check_class_transformer(transformer, class_names)
        k, codebook_size = clusters.config.num_clusters, clusters.config.codebook_size
        if codebook_size != vqvae.config.codebook_size:
            raise ValueError(f"the cluster table covers {codebook_size} codes but the tokenizer has "
                             f"{vqvae.config.codebook_size}.")
        if transformer.config.vocab_size != k:
            raise ValueError(f"the stage-1 transformer predicts {transformer.config.vocab_size} labels; it must "
                             f"predict the {k} coarse labels.")
        if refiner.input_vocab_size != k or refiner.config.vocab_size != codebook_size:
            raise ValueError(f"the refiner must read {k} coarse labels and predict {codebook_size} codes; it reads "
                             f"{refiner.input_vocab_size} and predicts {refiner.config.vocab_size}.")
        if refiner.config.attention != "bidirectional":
            raise ValueError("the refiner must be a bidirectional ARTransformer (attention='bidirectional').")
        if tuple(refiner.config.grid_size or ()) != tuple(transformer.config.grid_size):
            raise ValueError("the refiner and the stage-1 transformer must share the token grid.")
        self.register_modules(transformer=transformer, refiner=refiner, clusters=clusters, vqvae=vqvae)
        self.register_to_config(class_names=list(class_names) if class_names is not None else None,
                                mask_fine_logits=bool(mask_fine_logits))
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    def fine_logits(self, coarse: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """Stage 2: coarse labels [B, T] and classes [B] -> fine logits [B, T, codebook_size] (float32)."""
        logits = self.refiner(coarse, class_labels=class_labels)[:, self.refiner.config.num_prefix_tokens:]
        if self.config.mask_fine_logits:
            logits = self.clusters.restrict_logits(logits, coarse)
        return logits

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        num_images_per_prompt: int = 1,
        guidance_scale=2.0,
        temperature: float = 1.1,
        top_k: int = 0,
        top_p: float = 1.0,
        refiner_temperature: float = 1.1,
        refiner_top_k: int = 0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("tokens",),
        compile: bool = False,
    ):
        """Generate images of the given classes (defaults: the paper's CFG 2.0, temperatures 1.1, no top-k).

        Args:
            class_labels: class ids and/or names (see `pipe.config.class_names`).
            num_images_per_prompt: images per class label.
            guidance_scale: stage-1 CFG scale >= 0 (1 = off) or a `zoo.ar.GuidanceSchedule`.
            temperature, top_k, top_p: stage-1 sampling of coarse labels.
            refiner_temperature, refiner_top_k: stage-2 sampling of fine labels (temperature 0 = argmax).
            generator: a torch.Generator or a list, one per image; stage 2 continues the same generators.
            output_type: "pil", "np" (floats in [0, 1], NHWC) or "pt" (NCHW in [0, 1]).
            compile: run stage 1's decode step through torch.compile (CUDA graphs on GPU); the first call compiles.
        The step callback sees the coarse labels sampled so far as "tokens".
        """
        check_sampling_args(refiner_temperature, refiner_top_k, 1.0)
        labels = self.check_call(class_labels, num_images_per_prompt, output_type, callback_on_step_end_tensor_inputs)
        generators = normalize_generators(generator, len(labels))
        h, w = self.transformer.config.grid_size
        coarse = self.generate_tokens(h * w, callback_on_step_end, class_labels=labels, guidance_scale=guidance_scale,
                                      temperature=temperature, top_k=top_k, top_p=top_p, generator=generators,
                                      compile=compile).tokens
        fine = self.sample_fine(coarse, labels, refiner_temperature, refiner_top_k, generators)
        return self.image_output(self.decode_grid(fine), output_type, return_dict)

    def sample_fine(self, coarse: torch.Tensor, class_labels: torch.Tensor, temperature: float, top_k: int,
                    generators) -> torch.Tensor:
        """Stage 2 sampling: coarse labels [B, T] -> fine codebook ids [B, T]; row i draws from
        generators[i] only. With the cluster mask the head runs over each position's cluster members only
        (`CodeClusters.member_logits`): the same distribution as `fine_logits`, without its
        [B, T, codebook_size] logits, their mask, softmax and sampling."""
        coarse, class_labels = coarse.to(self.refiner.device), class_labels.to(self.refiner.device)
        if not self.config.mask_fine_logits:
            probs = logits_to_probs(self.fine_logits(coarse, class_labels), temperature, top_k, 1.0)  # [B, T, V]
            return sample_from_probs(probs, generators)
        hidden = self.refiner.sequence_hidden(coarse, class_labels=class_labels)
        logits, ids = self.clusters.member_logits(hidden[:, self.refiner.config.num_prefix_tokens:],
                                                  self.refiner.head.weight, coarse)  # [B, T, M] each
        slot = sample_from_probs(logits_to_probs(logits, temperature, top_k, 1.0), generators)  # [B, T]
        return ids.gather(-1, slot[..., None]).squeeze(-1)

