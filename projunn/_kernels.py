"""The compiled time loop of ``UnitaryRNN`` on the CPU (Note [compiled recurrence] in rnn.py).

``recurrence()`` returns the module built from ``csrc/recurrence.cpp``, or ``None`` where it is
turned off (``PROJUNN_COMPILED_RECURRENCE=0``) or does not build; then the pure-PyTorch loop runs,
after one warning saying why. The first call on a machine builds it with
``torch.utils.cpp_extension.load`` (a C++ compiler and ninja are needed; about a minute) into
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), in a folder named by a hash of
the source, the flags, torch's and Python's versions; later processes import the built library
directly, without torch's rebuild check (which costs seconds per process).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import sysconfig
import warnings
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).parent / "csrc" / "recurrence.cpp"
# -fno-trapping-math lets the compiler vectorize the element-wise passes' selects (h > 0 ? v : 0):
# with traps assumed, a comparison may raise and the loop keeps a branch per element, 10x slower.
FLAGS = ["-O3", "-fno-trapping-math"]
_module: ModuleType | None = None
_tried = False


def _build_directory() -> tuple[str, Path]:
    """The module's name and folder: one per source, flags, torch and Python."""
    key = hashlib.sha256(
        SOURCE.read_bytes() + repr((FLAGS, torch.__version__, sys.version, sysconfig.get_platform())).encode()
    ).hexdigest()[:16]
    name = f"projunn_recurrence_{key}"
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    return name, root / name


class _DropMessage(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


def _build() -> ModuleType:
    name, folder = _build_directory()
    library, built = folder / f"{name}.so", folder / "built"
    if built.is_file():  # written after a whole build: the library is complete
        spec = importlib.util.spec_from_file_location(name, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    # torch's extension builder warns, when imported on a machine without a CUDA runtime, that it found
    # none: this build is C++ for the CPU and needs none, so that one message is dropped.
    torch_log = logging.getLogger("torch.utils.cpp_extension")
    no_cuda = _DropMessage("No CUDA runtime is found")
    torch_log.addFilter(no_cuda)
    try:
        from torch.utils.cpp_extension import load

        folder.mkdir(parents=True, exist_ok=True)  # torch's load locks it while one process builds
        module = load(name=name, sources=[str(SOURCE)], extra_cflags=FLAGS, build_directory=str(folder), verbose=False)
    finally:
        torch_log.removeFilter(no_cuda)
    partial = built.with_name(f"built.{os.getpid()}")
    partial.write_text(f"{library.name}\n")
    partial.replace(built)
    return module


def recurrence() -> ModuleType | None:
    """The compiled recurrence module, built on first call; ``None`` if it is off or does not build."""
    global _module, _tried
    if not _tried:
        _tried = True
        if os.environ.get("PROJUNN_COMPILED_RECURRENCE", "1") != "0":
            try:
                _module = _build()
            except Exception as error:  # no compiler, no ninja, a failed build: the PyTorch loop runs instead
                last = str(error).strip().splitlines()[-1] if str(error).strip() else ""
                warnings.warn(
                    f"projunn: the compiled recurrence did not build ({type(error).__name__}: {last}); "
                    "UnitaryRNN runs its pure-PyTorch loop instead (same results, slower on the CPU). "
                    "Set PROJUNN_COMPILED_RECURRENCE=0 to skip the attempt.",
                    stacklevel=3,
                )
    return _module
