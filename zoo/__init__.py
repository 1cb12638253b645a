"""zoo: token-based generative models (AR images, flexible and 3D tokenizers, codec speech) as a
diffusers plugin, on one shared autoregressive engine.

    import zoo
    pipe = zoo.load("name-or-folder-or-hub-id")
    zoo.list_models()

Public names are imported on first use, so `import zoo` stays fast; importing zoo also registers its
pipelines with diffusers (see zoo/_plugin.py).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    # engine
    "ARTransformer": "zoo.ar", "generate": "zoo.ar", "GenerationOutput": "zoo.ar", "NextTokenStep": "zoo.ar", "DDTransformer": "zoo.ar.distilled", "TokenShuffleTransformer": "zoo.ar.token_shuffle", "SpeechLM": "zoo.ar.speech", "generate_steps": "zoo.ar",
    "ConstantGuidance": "zoo.ar", "LinearGuidance": "zoo.ar", "GuidanceSchedule": "zoo.ar",
    # tokenizers
    "VQModel": "tokenizers_visual", "FlexTok": "tokenizers_visual", "KARLTokenizer": "tokenizers_visual", "VAT": "tokenizers_visual", "CodeClusters": "tokenizers_visual", "ShapesClassifier": "zoo.metrics.classifier",
    "SpeechCodec": "tokenizers_audio", "SpeechRecognizer": "zoo.metrics.recognizer",
    # pipelines
    "ZooPipeline": "pipelines", "ARImagePipeline": "pipelines", "CTFPipeline": "pipelines", "DistilledPipeline": "pipelines", "FlexTokPipeline": "pipelines", "VAT3DPipeline": "pipelines", "TokenShufflePipeline": "pipelines", "CodecTTSPipeline": "pipelines", "SpeechContinuationPipeline": "pipelines", "SpeechPipelineOutput": "pipelines", "ARTokenPipeline": "pipelines", "TokenPipelineOutput": "pipelines",
    # loading and the catalogue
    "load": "zoo.hub", "resolve": "zoo.hub", "ModelNotFoundError": "zoo.hub",
    "list_models": "weights_registry", "Entry": "weights_registry",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


from ._plugin import install as _install_plugin  # noqa: E402

_install_plugin()
