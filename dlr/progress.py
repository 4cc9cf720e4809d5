"""Per-iteration progress: a one-line bar on a terminal, log records otherwise."""

import logging
import sys

from dlr.solvers.common import Progress

log = logging.getLogger("dlr")


class ProgressReporter:
    """Callable given to a solver; prints to ``stream`` if it is a terminal, else logs."""

    def __init__(self, max_iter: int, stream=None):
        self.max_iter = max_iter
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, p: Progress) -> None:
        text = f"iter {p.iteration}  loss {p.loss:.6g}  |grad| {p.grad_norm:.3g}  {p.seconds:.3f}s"
        if p.validation_loss is not None:
            text += f"  validation loss {p.validation_loss:.6g}"
        if not self.tty:
            log.info(text)
            return
        width = 24
        done = int(width * p.iteration / max(1, self.max_iter))
        bar = "#" * done + "-" * (width - done)
        self.stream.write(f"\r[{bar}] {p.iteration}/{self.max_iter}  {text}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
