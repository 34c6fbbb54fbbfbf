"""``python -m cagcl_mini COMMAND ...``: the ``cagcl-mini`` command (also under torchrun)."""

import sys

from cagcl_mini.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
