"""Robot-assisted dressing: a sleeve pulled up a person's arm in MuJoCo (``embodied/Dressing-v1``)."""

from envs.dressing.env import OBSERVATION_LAYOUT, DressingEnv
from envs.dressing.policies import DressingExpert, SnagPolicy, StopEarlyPolicy, VariedDressingExpert, WrongApproachPolicy

__all__ = ["OBSERVATION_LAYOUT", "DressingEnv", "DressingExpert", "SnagPolicy", "StopEarlyPolicy", "VariedDressingExpert", "WrongApproachPolicy"]
