"""Experiments that train and compare models.

- :mod:`~cagcl_mini.experiments.claims`: the CA-GCL claims, fvlm vs cagcl over seeds;
- :mod:`~cagcl_mini.experiments.probe`: label-aware bounds for zero-shot detection (linear probe,
  supervised image tower, intensity statistics).
"""
