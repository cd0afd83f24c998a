"""``petseg``: start the desktop annotator, optionally on an image or a folder."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petseg", description="Annotate pet photos: background / cat / dog masks.")
    parser.add_argument("path", nargs="?", help="an image or a folder of images to open")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    # The canvas draws with the raster engine. Qt's GLX integration would load Mesa's LLVM, which
    # clashes with the LLVM inside triton (imported by CUDA builds of torch): a segfault on X11.
    os.environ.setdefault("QT_XCB_GL_INTEGRATION", "none")
    from PyQt5.QtCore import Qt
    from PyQt5.QtWidgets import QApplication

    from petseg_desktop import __version__
    from petseg_desktop.main_window import MainWindow

    QApplication.setAttribute(Qt.AA_EnableHighDpiScaling, True)
    QApplication.setAttribute(Qt.AA_UseHighDpiPixmaps, True)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "petseg"])
    app.setOrganizationName("PetSeg")
    app.setApplicationName("petseg")
    app.setApplicationVersion(__version__)
    window = MainWindow(device=args.device)
    window.show()
    if args.path:
        window.open_path(args.path)
    return app.exec_()


if __name__ == "__main__":
    sys.exit(main())
