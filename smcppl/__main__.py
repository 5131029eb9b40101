import sys

from smcppl.cli import main

sys.exit(main())
