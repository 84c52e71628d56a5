"""A simulated OpenAI-compatible model server, for demos, tests and benchmarks. It is a simulator:
its answers are generated text, not a model's."""

from airlock.sim.profile import SimProfile
from airlock.sim.server import build_sim_app, run_sim

__all__ = ["SimProfile", "build_sim_app", "run_sim"]
