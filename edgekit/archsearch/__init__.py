"""``edgekit nas``: an architecture search (Optuna, multi-objective) scored by the task metric of each
candidate's quantized file in its runtime and by its p90 measured there, under the profile's budgets.

It sits above the pipeline: every candidate is exported, quantized, validated and benched by the build's
own ``run_plan``, and the chosen member is built into a bundle by ``build()``.
"""
from .api import NasResult, nas
from .options import NasOptions

__all__ = ["NasOptions", "NasResult", "nas"]
