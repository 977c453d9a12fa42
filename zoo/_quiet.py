"""Keep TensorFlow's start-up logs off the CLI's stderr (``zoo --verbose`` shows them).

``TF_CPP_MIN_LOG_LEVEL`` alone is not enough: TensorFlow 2.21 writes its first C++ lines (the
oneDNN notice, the CUDA stub, ``E0000 ... failed call to cuInit``) through absl before absl
logging is initialised, ignoring that variable. So the CLI also points file descriptor 2 at a
pipe whose reader drops lines in absl/TensorFlow log format and passes everything else on;
Python's ``sys.stderr`` keeps writing to the real stream (so ``isatty()`` stays true on a
terminal). Python warnings are shown only when they come from the zoo itself.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings

# absl (I0000 00:00:1796.5 123 port.cc:153] ...), TF's older format (2026-01-01 10:00:00.1: W
# tensorflow/...cc:12] ...), absl's pre-init banner and the CPU-feature notice's second line.
# Fatal (F) lines are kept: the process is about to die and the line says why.
TF_LOG_LINE = re.compile(
    rb"^\s*(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow)")


class StderrFilter:
    """Route fd 2 through a thread that drops TensorFlow log lines; ``close`` restores it."""

    def __init__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._stderr = sys.stderr
        sys.stderr = open(
            os.dup(self._saved),
            "w",
            buffering=1,
            encoding=getattr(self._stderr, "encoding", None) or "utf-8",
            errors="backslashreplace",
        )
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(
            target=self._pump, args=(read,), daemon=True, name="zoo-stderr-filter"
        )
        self._thread.start()

    def _pump(self, read: int) -> None:
        pending = b""
        while chunk := os.read(read, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not TF_LOG_LINE.match(line))
            if kept:
                os.write(self._saved, kept)
        if pending and not TF_LOG_LINE.match(pending):
            os.write(self._saved, pending)
        os.close(read)

    def close(self) -> None:
        """Put fd 2 and ``sys.stderr`` back; wait briefly for the filter to drain."""
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end held by this process
        self._thread.join(timeout=5)  # a child still holding the pipe may keep it open
        sys.stderr.close()
        sys.stderr = self._stderr
        os.close(self._saved)


def _zoo_warnings_only(showwarning):
    """A ``warnings.showwarning`` that shows the zoo's own warnings and drops the libraries'."""

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("zoo") or f"{os.sep}zoo{os.sep}" in str(filename):
            showwarning(message, category, filename, lineno, file, line)

    return show


class QuietTensorFlow:
    """Silence TensorFlow/Keras/absl chatter until ``close`` (start it before TensorFlow is
    imported).

    The fd-2 filter is set only when ``sys.stderr`` is the process's fd 2 (not under a test's
    capture), so in-process callers keep their own stderr.
    """

    def __init__(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self._levels = {
            name: logging.getLogger(name).level for name in ("tensorflow", "absl", "h5py")
        }
        for name in self._levels:
            logging.getLogger(name).setLevel(logging.ERROR)
        self._showwarning = warnings.showwarning
        warnings.showwarning = _zoo_warnings_only(self._showwarning)
        try:
            on_fd2 = sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):  # io.StringIO, pytest's capture
            on_fd2 = False
        self._filter = StderrFilter() if on_fd2 else None

    def close(self) -> None:
        if self._filter is not None:
            self._filter.close()
        warnings.showwarning = self._showwarning
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
