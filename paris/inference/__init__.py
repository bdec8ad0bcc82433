"""Sampling: the mixture and its pool, routing rules, the velocity field, the integrator, and the pipelines
(ParisPipeline; the diffusers one; the public release read as paris models)."""
