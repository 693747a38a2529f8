"""`python -m embedsvc`: the same as the `embedsvc` command."""

import sys

from embedsvc.cli import main

sys.exit(main())
