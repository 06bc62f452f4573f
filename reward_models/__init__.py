"""Reward labeling and reward models (labelers, preference data, Bradley-Terry models,
relabeling). Imports from :mod:`policies` only, never from :mod:`embodied`."""
