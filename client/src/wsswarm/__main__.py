import sys

from wsswarm.cli import main

sys.exit(main())
