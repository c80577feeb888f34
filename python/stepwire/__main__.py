"""``python -m stepwire`` runs the command-line interface."""

from stepwire.cli import main

raise SystemExit(main())
