"""A dependency-free progress bar with rate and ETA, for terminals and for CI logs."""
import sys
import time


class Progress:
  """Counts steps of a loop; prints `label [####    ] i/n rate unit/s ETA m:ss`.

  On a terminal it redraws one line; otherwise (CI logs) it prints a line at most every `log_seconds`.
  """

  def __init__(self, total: int, label: str, unit: str = "ex", stream=None, log_seconds: float = 15.0):
    self.total, self.label, self.unit = total, label, unit
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.log_seconds = log_seconds
    self.start = self._last = time.perf_counter()
    self.done = 0
    self.units = 0

  def update(self, steps: int = 1, units: int = 0) -> None:
    self.done += steps
    self.units += units
    now = time.perf_counter()
    if self.done >= self.total or self.tty or now - self._last >= self.log_seconds:
      self._last = now
      self._draw(now, final=self.done >= self.total)

  def _draw(self, now: float, final: bool) -> None:
    elapsed = max(now - self.start, 1e-9)
    frac = self.done / max(self.total, 1)
    eta = elapsed * (1 - frac) / max(frac, 1e-9)
    bar = "#" * int(20 * frac)
    text = (f"{self.label} [{bar:<20}] {self.done}/{self.total} {self.units / elapsed:,.0f} {self.unit}/s "
            f"{'took' if final else 'ETA'} {_clock(elapsed if final else eta)}")
    end = "\n" if (final or not self.tty) else ""
    self.stream.write(("\r" if self.tty else "") + text + end)
    self.stream.flush()


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 60}:{seconds % 60:02d}"
