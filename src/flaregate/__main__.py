import sys

from .hosts.local.cli import main

sys.exit(main())
