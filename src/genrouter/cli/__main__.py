"""``python -m genrouter.cli``: the same CLI as the ``genrouter`` console script."""

from genrouter.cli import main

main()
