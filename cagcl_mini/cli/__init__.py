"""The ``cagcl-mini`` command line (:mod:`cagcl_mini.cli.main`), one module per subcommand."""
