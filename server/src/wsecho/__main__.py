"""`python -m wsecho`: the same as the `wsecho` command."""

from wsecho.cli import main

raise SystemExit(main())
