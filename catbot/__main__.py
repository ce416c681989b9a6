import sys

from catbot.commands.cli import main

sys.exit(main())
