"""zoo's pipelines: one file per family, each a `diffusers.DiffusionPipeline` subclass.

Importing zoo registers these classes in the `diffusers` namespace, so
`DiffusionPipeline.from_pretrained(folder)` opens zoo pipelines too.
"""

from .ar_image import ARImagePipeline, ClassImagePipeline
from .ctf import CTFPipeline
from .distilled import DistilledPipeline
from .flextok import FlexTokPipeline, FlexTokPipelineOutput
from .vat import VAT3DPipeline, VAT3DPipelineOutput
from .token_shuffle import TokenShufflePipeline
from .speech import CodecTTSPipeline, SpeechContinuationPipeline, SpeechPipelineOutput
from .ar_tokens import ARTokenPipeline, TokenPipelineOutput
from .base import ZooPipeline

__all__ = ["ARImagePipeline", "ARTokenPipeline", "CTFPipeline", "ClassImagePipeline", "CodecTTSPipeline", "DistilledPipeline",
           "FlexTokPipeline", "FlexTokPipelineOutput", "SpeechContinuationPipeline", "SpeechPipelineOutput", "TokenShufflePipeline", "TokenPipelineOutput", "VAT3DPipeline",
           "VAT3DPipelineOutput", "ZooPipeline"]
PIPELINE_CLASSES = ["ARImagePipeline", "ARTokenPipeline", "CTFPipeline", "CodecTTSPipeline", "DistilledPipeline",
                    "FlexTokPipeline", "SpeechContinuationPipeline", "TokenShufflePipeline", "VAT3DPipeline"]  # registered in the diffusers namespace

from zoo._plugin import register_pipelines  # noqa: E402

register_pipelines()
