"""Inference: the SVI training loop and its checkpoints."""

from pyro_vpf.infer.fit import FitHistory, fit, load_checkpoint, save_checkpoint

__all__ = ["FitHistory", "fit", "load_checkpoint", "save_checkpoint"]
