"""``python -m capsim``: the same as the ``capsim`` command (useful from a source checkout or a worktree)."""

from capsim.cli import main

main()
