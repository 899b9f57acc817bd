"""``entrobust info``: versions, device and thread count."""

from __future__ import annotations

import argparse
import platform


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, available devices and CPU threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from entrobust import __version__
    from entrobust.runtime import select_device

    mps = getattr(torch.backends, "mps", None)
    print(f"entrobust  {__version__}")
    print(f"python     {platform.python_version()} ({platform.platform()})")
    print(f"torch      {torch.__version__}")
    print(f"cuda       {'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}")
    print(f"mps        {'yes' if mps is not None and mps.is_available() else 'no'}")
    print(f"device     {select_device('auto')} (auto)")
    print(f"threads    {torch.get_num_threads()}")
    return 0
