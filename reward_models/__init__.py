"""Reward labeling and reward models: preference data, B-Pref scripted teachers, Bradley-Terry
reward ensembles and relabeling (VLM and CLIP labelers come next). Imports from :mod:`policies`
only, never from :mod:`embodied`."""
