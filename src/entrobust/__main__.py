"""``python -m entrobust`` runs the command-line interface."""

from entrobust.cli import main

raise SystemExit(main())
