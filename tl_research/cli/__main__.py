"""`python -m tl_research.cli`: the same as `tlr`."""

import sys

from tl_research.cli.main import main

sys.exit(main())
