"""`python -m sarm_client` is the `sarm-client` command."""

import sys

from sarm_client.cli import main

sys.exit(main())
