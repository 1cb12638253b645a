"""Flow-matching helpers shared by zoo's methods: distilled decoding's Dirac-mixture map and the
rectified flow of the 1D tokenizers' decoders."""

from .dirac import DiracFlowSampler, dirac_denoise, dirac_flow_map, dirac_velocity
from .rectified import Guidance, logit_normal_times, noise_path, sample_euler, uniform_time_scheduler

__all__ = ["DiracFlowSampler", "Guidance", "dirac_denoise", "dirac_flow_map", "dirac_velocity", "logit_normal_times",
           "noise_path", "sample_euler", "uniform_time_scheduler"]
