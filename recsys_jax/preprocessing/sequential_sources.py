"""One entry point for the command line: any sequential source -> a cached SequentialDataset.

The preprocessed dataset is cached as `.npz` under `cache_dir`, named by a hash of the source kind, the
source files' fingerprints (path, size, modification and change times), the column mapping (interactions
only), the preprocessing config (max_len only for recommenders files), the synthetic options (synthetic only)
and a format version, so a changed file or setting makes a new cache and an unchanged one is reused.
"""
import dataclasses
import os
from typing import Any

from absl import logging

from recsys_jax import files
from recsys_jax.errors import InputError
from recsys_jax.preprocessing.sequential import SequentialPrepConfig, preprocess
from recsys_jax.preprocessing.sequential_dataset import SequentialDataset
from recsys_jax.sources import amazon_reviews, interactions_table, recommenders_files

DATASETS = ("synthetic", "amazon", "interactions", "recommenders")
# Keys of `columns` for dataset "interactions" -> read_interactions_table arguments.
INTERACTION_COLUMNS = ("user", "item", "time", "cate", "meta_item", "meta_cate", "sep")
_COLUMN_ALIASES = {"category": "cate", "meta_category": "meta_cate"}  # the command line's flag names
# Bump when preprocessing semantics or the cached layout change, so old caches are not reused.
FORMAT_VERSION = 1


def load_sequential_dataset(dataset: str, *, data_path: str | None, meta_path: str | None,
                            columns: dict[str, str], config: SequentialPrepConfig, cache_dir: str,
                            synthetic_options: dict | None = None) -> SequentialDataset:
  """Loads (or builds and caches) the SequentialDataset of a source.

  Args:
    dataset: "synthetic", "amazon" (review JSON lines + optional meta), "interactions" (CSV/TSV table +
      optional item meta table) or "recommenders" (a folder of `recommenders` preprocessed files).
    data_path: the reviews file, the interactions table, or the recommenders folder.
    meta_path: the Amazon meta file or the item meta table (optional).
    columns: column names for "interactions" (keys in INTERACTION_COLUMNS, or "category" and
      "meta_category"; None values keep the reader's defaults); ignored otherwise.
    config: preprocessing settings; for "recommenders" only max_len applies.
    cache_dir: folder of the cached `.npz` files.
    synthetic_options: keyword arguments of `recsys_jax.synthetic.sequential.generate`.
  """
  if dataset not in DATASETS:
    raise InputError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
  columns = _columns(columns) if dataset == "interactions" else {}  # other sources name no columns
  _check_paths(dataset, data_path, meta_path)
  key = {"format_version": FORMAT_VERSION, "dataset": dataset, "columns": columns,
         "files": _fingerprints(dataset, data_path, meta_path)}
  if dataset == "recommenders":
    key["max_len"] = config.max_len  # the files are already preprocessed
  else:
    key["config"] = dataclasses.asdict(config)
  if dataset == "synthetic":
    key["synthetic_options"] = dict(synthetic_options or {})
  path = os.path.join(cache_dir, f"{dataset}-{files.config_key(key)}.npz")
  if os.path.exists(path):
    try:
      cached = SequentialDataset.load(path)
      logging.info("reusing cache %s", path)
      return cached
    except (OSError, ValueError, KeyError) as e:  # unreadable cache: rebuild it rather than fail
      logging.warning("ignoring unreadable cache %s (%s)", path, e)
  built = _build(dataset, data_path, meta_path, columns, config, synthetic_options)
  built.save(path)
  logging.info("cached %s dataset at %s (%s)", dataset, path, built.stats)
  return built


def _columns(columns: dict[str, str | None] | None) -> dict[str, str]:
  out = {_COLUMN_ALIASES.get(k, k): v for k, v in (columns or {}).items() if v is not None}
  unknown = sorted(set(out) - set(INTERACTION_COLUMNS))
  if unknown:
    raise InputError(f"unknown column keys {unknown}; valid keys: {', '.join(INTERACTION_COLUMNS)}")
  return out


def _check_paths(dataset: str, data_path: str | None, meta_path: str | None) -> None:
  if dataset == "synthetic":
    return
  if not data_path:
    what = "folder of recommenders files" if dataset == "recommenders" else "file"
    raise InputError(f"dataset {dataset!r} needs --data_path (the {what})")
  if not os.path.exists(data_path):
    raise InputError("not found (--data_path)", data_path)
  if meta_path and not os.path.exists(meta_path):
    raise InputError("not found (--meta_path)", meta_path)


def _fingerprints(dataset: str, data_path: str | None, meta_path: str | None) -> list[dict[str, Any]]:
  paths = []
  if dataset == "recommenders":
    names = list(recommenders_files.SPLIT_FILES.values()) + list(recommenders_files.VOCAB_FILES.values())
    paths = [os.path.join(data_path, n) for n in names]
  elif data_path:
    paths = [data_path] + ([meta_path] if meta_path else [])
  # A missing file gets no fingerprint here; the reader reports it.
  return [files.file_fingerprint(p) if os.path.exists(p) else {"path": os.path.abspath(p)} for p in paths]


def _build(dataset: str, data_path: str | None, meta_path: str | None, columns: dict[str, str],
           config: SequentialPrepConfig, synthetic_options: dict | None) -> SequentialDataset:
  if dataset == "recommenders":
    return recommenders_files.read_recommenders_files(data_path, max_len=config.max_len)
  if dataset == "synthetic":
    from recsys_jax.synthetic import sequential as synthetic_sequential  # only this source needs it
    frame = synthetic_sequential.generate(**(synthetic_options or {}), seed=config.seed)
    return preprocess(frame, config, "synthetic")
  if dataset == "amazon":
    frame = amazon_reviews.read_amazon_reviews(data_path, meta_path)
  else:
    frame = interactions_table.read_interactions_table(data_path, meta_path=meta_path, **columns)
  return preprocess(frame, config, _name(data_path))


def _name(path: str) -> str:
  """e.g. "Musical_Instruments" for Musical_Instruments.json.gz, "amazon-grocery/train" for a table."""
  base = os.path.basename(path)
  for ext in (".gz", ".json", ".jsonl", ".csv", ".tsv", ".txt"):
    base = base[:-len(ext)] if base.endswith(ext) else base
  parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
  return f"{parent}/{base}" if base in ("train", "data", "interactions", "reviews") else base
