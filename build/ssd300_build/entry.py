"""The ``ssd300-build`` command: the model build, or a clear word when its extra is missing.

``pip install ssd300-triton`` is the client only; building model.pt needs torch and
torchvision (the ``build`` extra). Without them the command says so instead of a traceback.
"""

from __future__ import annotations

import sys

INSTALL_HINT = "pip install 'ssd300-triton[build]' (or, in this repository, make setup)"


def main(argv: list[str] | None = None) -> int:
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as error:
        print(f"ssd300-build needs torch and torchvision ({error}): {INSTALL_HINT}", file=sys.stderr)
        return 2
    from .__main__ import main as build

    return build(argv)


if __name__ == "__main__":
    sys.exit(main())
