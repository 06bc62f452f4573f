"""OER (Gai, Wang and He, "Offline Experience Replay for Continual Offline Reinforcement
Learning", ECAI 2023): dual behaviour cloning on top of IQL, and model-based experience selection."""

from policies.oer.config import OERConfig

__all__ = ["OERConfig"]
