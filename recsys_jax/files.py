"""Atomic file writes and config-keyed cache paths.

Outputs are written to a temporary file in the target folder and renamed into place, so a killed or failed
run never leaves a half-written cache or result behind.
"""
import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any, Iterator

import numpy as np

from recsys_jax.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)
FOLDER_MODE = 0o777 & ~_UMASK  # what os.makedirs gives a new folder


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  suffix = os.path.splitext(path)[1]  # np.save/np.savez append their extension unless it is present
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
  os.close(fd)
  try:
    yield tmp
    if os.path.isfile(tmp):
      os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


def write_json(path: str, obj: Any) -> None:
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  with atomic_path(path) as tmp:
    np.savez(tmp, **arrays)


def load_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def require_file(path: str, expected: str = "") -> None:
  """InputError unless `path` is an existing file (a folder or a missing path is named as such)."""
  problem = "is a folder, not a file" if os.path.isdir(path) else "file not found"
  if not os.path.isfile(path):
    raise InputError(problem + (f"; expected {expected}" if expected else ""), path)


def file_fingerprint(path: str) -> dict[str, Any]:
  """Identifies a source file's version cheaply: absolute path, size, modification and change times.

  The change time catches an edit whose modification time was set back (`cp -p`, rsync, tar).
  """
  st = os.stat(path)
  return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
          "ctime_ns": st.st_ctime_ns}


def config_key(config: dict[str, Any]) -> str:
  """A short stable hash of a JSON-able config, used to name caches."""
  blob = json.dumps(config, sort_keys=True, default=_json_default).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def _json_default(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
