"""``python -m tachimeter.cli``."""

from tachimeter.cli import main

main()
