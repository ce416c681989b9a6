import sys

from catbot.cli import main

sys.exit(main())
