"""Interventions (do-operators), counterfactual evaluation, search, ethics gates."""
