"""The pretraining objectives.

- :mod:`~cagcl_mini.losses.targets`: which (image, text) pairs are positives (false-negative rule);
- :mod:`~cagcl_mini.losses.terms`: local (fVLM), global cross-anatomy (CA-GCL), anatomy and
  diagnosis (CT-GLIP), sigmoid (SigLIP) forms; each a function of embeddings and masks;
- :mod:`~cagcl_mini.losses.objective`: terms by name, presets, ``compute_losses`` and the one
  vocabulary of loss inputs (``INPUT_KEYS``).
"""
