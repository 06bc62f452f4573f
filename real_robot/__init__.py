"""Deployment on real robots: robot interface, ROS 2 transport over Cyclone DDS, safety layer,
simulated robot node. Imports from :mod:`policies` (inference) only."""
