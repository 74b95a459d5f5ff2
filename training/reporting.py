"""How a run ends for its user: a signal stops it with exit status 128 + its number and one line
saying where to resume from; an error the user caused (a bad override, missing data, an unwritable
directory, a diverging run) is one line, its traceback in ``<run dir>/error.log``; wandb is closed
in every case (a sweep starts the next run in the same process)."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from pytorch_lightning.utilities import rank_zero_only

from .interrupts import Interrupted
from .lightning_module import NonFiniteLossError

USER_ERRORS = (ValueError, TypeError, OSError, NonFiniteLossError)


def user_error(error: BaseException) -> BaseException | None:
    """The user-caused error behind ``error`` (Hydra wraps errors of instantiated objects), or ``None``."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    return error if isinstance(error, USER_ERRORS) else None


def as_command(train: Callable[..., Any]) -> Callable[..., Any]:
    """``train`` as a command: interrupts and user errors end the process as the module docstring
    says (on rank 0 only, in a distributed run, where every process stops); other errors keep
    their traceback."""

    @functools.wraps(train)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return train(*args, **kwargs)
        except Interrupted as stopped:
            if rank_zero_only.rank == 0:
                print(str(stopped), file=sys.stderr)
            sys.exit(stopped.code)
        except Exception as error:
            cause = user_error(error)
            if cause is None:
                raise
            if rank_zero_only.rank == 0:
                details: Path | None = Path(HydraConfig.get().runtime.output_dir) / "error.log"
                try:
                    details.write_text("".join(traceback.format_exception(error)))
                except OSError:
                    details = None
                print(f"error: {cause}" + (f" (traceback in {details})" if details else ""), file=sys.stderr)
            sys.exit(1)
        finally:
            if "wandb" in sys.modules:
                import wandb

                wandb.finish()

    return command
