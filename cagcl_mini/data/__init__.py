"""Loading CT-RATE-layout data for the model.

- :mod:`~cagcl_mini.data.index`: the split's volumes, maps and CSV rows as ``VolumeRecord``s;
- :mod:`~cagcl_mini.data.transforms`: the MONAI pipeline (load, check, spacing, HU, anatomy ids,
  RAS, window, resize);
- :mod:`~cagcl_mini.data.dataset`: ``CTReportDataset`` (items in the batch layout) and ``collate``.
"""
