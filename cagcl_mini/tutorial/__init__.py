"""Running the tutorial: :mod:`~cagcl_mini.tutorial.runner` executes the notebooks with papermill."""
