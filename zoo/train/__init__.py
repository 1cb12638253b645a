"""Training recipes, run by `zoo train NAME` (or `accelerate launch -m zoo train NAME` on many GPUs).

RECIPES maps a recipe name to the module whose `main(argv)` runs it; each model issue adds its own.
"""

RECIPES: dict[str, str] = {
    "asr-speech": "zoo.train.asr_speech",
    "codec-speech": "zoo.train.codec_speech",
    "ctf-shapes": "zoo.train.ctf_shapes",
    "dd-shapes": "zoo.train.dd_shapes",
    "shapes-classifier": "zoo.train.shapes_classifier",
    "token-shuffle-shapes": "zoo.train.token_shuffle_shapes",
    "tts-speech": "zoo.train.tts_speech",
    "llamagen-shapes": "zoo.train.llamagen_shapes",
    "vq-shapes": "zoo.train.vq_shapes",
    "vae-shapes": "zoo.train.vae_shapes",
    "flextok-shapes": "zoo.train.flextok_shapes",
    "flextok-ar-shapes": "zoo.train.flextok_ar_shapes",
    "karl-shapes": "zoo.train.karl_shapes",
    "vat-primitives": "zoo.train.vat_primitives",
    "vat-ar-primitives": "zoo.train.vat_ar_primitives",
}
