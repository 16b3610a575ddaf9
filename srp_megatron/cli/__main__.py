"""``python -m srp_megatron.cli`` (e.g. under ``torchrun -m``): the ``srp`` command."""

import sys

from srp_megatron.cli import main

sys.exit(main())
