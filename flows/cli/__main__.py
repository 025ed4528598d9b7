"""`python -m p2m.flows.cli`: the `p2m` command."""

import sys

from p2m.flows.cli.main import main

sys.exit(main())
