"""Hydra configuration (YAML only); a package so that installed copies find it (pkg://conf)."""
