"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""
import os

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture(name: str) -> str:
  """Path of a small hand-made file in tests/fixtures."""
  return os.path.join(FIXTURES, name)


def write(tmp_path, text: str, name: str) -> str:
  """Writes `text` to tmp_path/name and returns the path as a string."""
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)
