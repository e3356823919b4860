"""The digital twin: patient state from Observations and Conditions, models, simulations.

Everything in this package is pure (no Flask, no SQLAlchemy): `mapping` turns resources into
facts, `state` folds facts into the twin state, `models` are validated risk equations, `simulate`
runs forward simulations, `risk` renders results as RiskAssessment resources.
"""
