"""Flow-matching helpers shared by zoo's methods (distilled decoding's Dirac-mixture map today;
the rectified-flow decoders of the 1D tokenizers arrive with their issue)."""

from .dirac import DiracFlowSampler, dirac_denoise, dirac_flow_map, dirac_velocity

__all__ = ["DiracFlowSampler", "dirac_denoise", "dirac_flow_map", "dirac_velocity"]
