"""Evaluating a model on embedded splits.

- :mod:`~cagcl_mini.evaluation.embed`: run the model over a split once (``EmbeddedSplit``);
- :mod:`~cagcl_mini.evaluation.metrics`: AUC, thresholds, thresholded metrics;
- :mod:`~cagcl_mini.evaluation.zero_shot`: zero-shot detection, prompt-family robustness;
- :mod:`~cagcl_mini.evaluation.retrieval`: anatomy recognition, volume-report retrieval;
- :mod:`~cagcl_mini.evaluation.collapse`: text-embedding collapse statistics;
- :mod:`~cagcl_mini.evaluation.splitting`: how well reports are split on real CT-RATE text;
- :mod:`~cagcl_mini.evaluation.evaluate`: all of it in one call, and a text summary.
"""
