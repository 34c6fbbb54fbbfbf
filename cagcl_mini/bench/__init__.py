"""The benchmarks behind the README's figures (``cagcl-mini bench NAME``), one module each:
``data``, ``reports``, ``pooling``, ``train``, ``claims``, ``probe``; ``timing`` holds helpers."""
