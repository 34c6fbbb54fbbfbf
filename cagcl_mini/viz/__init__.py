"""Plots and viewers for the notebooks; every function returns a figure (or a widget).

- :mod:`~cagcl_mini.viz.figure`: the notebook figure and the anatomy palette;
- :mod:`~cagcl_mini.viz.slices`: CT slices with the anatomy overlay, the interactive viewer;
- :mod:`~cagcl_mini.viz.plots`: histograms, embedding maps, loss curves, AUC bars, heat maps.
"""
