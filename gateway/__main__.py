"""``python -m gateway``: the same command line as ``iii-gateway``."""

from gateway.cli import main

raise SystemExit(main())
