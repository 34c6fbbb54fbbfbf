"""Pretraining.

- :mod:`~cagcl_mini.train.config`: ``TrainConfig``, presets, YAML, ``key=value`` overrides;
- :mod:`~cagcl_mini.train.setup`: ``model_for``, ``dataset_for``, ``load_model``, schedule;
- :mod:`~cagcl_mini.train.batches`: seeded global batches, augmented texts, the dictionary;
- :mod:`~cagcl_mini.train.step`: one step's losses (batch -> model -> losses);
- :mod:`~cagcl_mini.train.loop`: ``fit``, ``ensure_trained``, ``trained_model``;
- :mod:`~cagcl_mini.train.checkpoint`, :mod:`~cagcl_mini.train.distributed`,
  :mod:`~cagcl_mini.train.log`: checkpoints, torchrun, the metrics log.
"""
