"""`python -m polybus` runs the console script."""

from __future__ import annotations

import sys

from polybus.cli import main


sys.exit(main())
