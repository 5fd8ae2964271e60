"""twins: a digital-twin sandbox for causal what-if questions.

Batched Mesa twins on torch kernels, counterfactual interventions with paired
intervals, policy search, and ethics review gates. Start with
``python -m twins --help``.
"""
__version__ = "0.1.0"
