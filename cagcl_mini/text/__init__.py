"""Report text: one description per anatomy, abnormal flags, the abnormality dictionary, and
CA-GCL's text augmentation.

- :mod:`~cagcl_mini.text.reports`: sentences, routing, ``split_report``;
- :mod:`~cagcl_mini.text.findings`: ``is_abnormal``, ``findings``, the abnormality dictionary;
- :mod:`~cagcl_mini.text.augment`: permutation and partial-completeness augmentation.
"""
