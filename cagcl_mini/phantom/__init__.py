"""The embedded synthetic dataset: procedural thorax + upper-abdomen CT written in CT-RATE's layout.

Lowest first:

- :mod:`~cagcl_mini.phantom.shapes`: grids, ellipsoids, capsules, smooth noise, blur;
- :mod:`~cagcl_mini.phantom.body`: the patient (body, lungs, abdomen) on a canvas;
- :mod:`~cagcl_mini.phantom.mediastinum`: heart, vessels, airway, skeleton;
- :mod:`~cagcl_mini.phantom.findings`: the 22 findings, sampled and painted;
- :mod:`~cagcl_mini.phantom.render`: one volume's voxels from its seed;
- :mod:`~cagcl_mini.phantom.reports`: report text of the findings;
- :mod:`~cagcl_mini.phantom.plan`: what a volume will be (findings, report, metadata), and
  :class:`PhantomSpec`, what a dataset will be;
- :mod:`~cagcl_mini.phantom.io`: reproducible NIfTI.gz and CSV bytes;
- :mod:`~cagcl_mini.phantom.build`: ``make_dataset`` / ``ensure_dataset``.
"""
