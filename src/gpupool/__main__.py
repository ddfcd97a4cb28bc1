"""``python -m gpupool`` is the ``gpupool`` command."""

from gpupool.cli.app import main

main()
