"""A simulated x64 Windows target, built on cartd.kd in TARGET role."""
