"""Flow-matching helpers shared by zoo's methods: distilled decoding's Dirac-mixture map and the
rectified flow of the 1D tokenizers' decoders, and REPA's alignment loss for training them."""

from .dirac import DiracFlowSampler, dirac_denoise, dirac_flow_map, dirac_velocity
from .repa import REPAProjector, features_on_grid, repa_loss
from .rectified import Guidance, logit_normal_times, noise_path, sample_euler, uniform_time_scheduler

__all__ = ["DiracFlowSampler", "Guidance", "dirac_denoise", "dirac_flow_map", "dirac_velocity", "logit_normal_times",
           "noise_path", "sample_euler", "uniform_time_scheduler", "REPAProjector", "features_on_grid", "repa_loss"]
