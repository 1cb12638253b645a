"""The catalogue of named checkpoints and the converters from original formats."""
