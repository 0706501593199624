"""`python -m clusterprep` runs the command-line interface."""

from clusterprep.cli import main

raise SystemExit(main())
