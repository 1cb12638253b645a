"""Flow-matching helpers shared by zoo's methods: distilled decoding's Dirac-mixture map and the
rectified flow of the 1D tokenizers' decoders, and REPA's alignment loss for training them."""

from .dirac import DiracFlowSampler, dirac_denoise, dirac_flow_map, dirac_velocity
from .rectified import Guidance, logit_normal_times, noise_path, sample_euler, uniform_time_scheduler
from .repa import REPAProjector, features_on_grid, repa_loss

__all__ = ["DiracFlowSampler", "Guidance", "REPAProjector", "dirac_denoise", "dirac_flow_map", "dirac_velocity",
           "features_on_grid", "logit_normal_times", "noise_path", "repa_loss", "sample_euler",
           "uniform_time_scheduler"]
