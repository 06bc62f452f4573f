"""Forward-backward representations (Touati and Ollivier 2021; Meta Motivo, Tirinzoni et al. 2025):
a behaviour foundation model trained without rewards, prompted with a latent z."""

from policies.fb.config import FBConfig
from policies.fb.model import FBLearner, fb_loss, orthonormality_loss, project_z

__all__ = ["FBConfig", "FBLearner", "fb_loss", "orthonormality_loss", "project_z"]
