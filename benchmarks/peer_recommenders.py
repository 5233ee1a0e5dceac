"""Peer side of the sequential benchmark: Microsoft `recommenders` (TensorFlow).

Runs the upstream `SLI_RECModel` or `A2SVDModel` (recommenders 1.2.1,
TensorFlow 2.15, graph mode via tf.compat.v1) with `SequentialIterator` on a
data folder in the recommenders sequential format and measures it. Meant to
run inside the venv made by `benchmarks/peer_env.sh`; it imports neither jax
nor recsys_jax.

Usage:
  $(bash benchmarks/peer_env.sh | tail -1) benchmarks/peer_recommenders.py \
      --data_dir DIR --model slirec --workdir /tmp/peer_slirec

The data folder holds `train_data`, `valid_data`, `test_data` (tab-separated:
label, user, item, category, timestamp, history items, history categories,
history timestamps; valid/test in blocks of 1 positive + N negatives) and
`user_vocab.pkl`, `item_vocab.pkl`, `category_vocab.pkl`.

Timing method. The upstream `fit` is used unchanged. The model class is
subclassed only to time, during `fit`, every `run_eval` call (the per-epoch
validation) and every checkpoint save (`saver.save`). Training seconds are the
wall seconds of `fit` minus those. What remains is the per-epoch train loop as
upstream runs it: parsing the train file (first epoch only; the iterator then
caches it), shuffling, batching and in-batch negative sampling, the
`sess.run` train steps, and writing the tf summaries (on, as in the yaml).
Per-epoch training seconds come from the same timestamps.

Test evaluation. `fit` saves `best_model` (best valid group_auc, the upstream
default `eval_metric`) under MODEL_DIR; the test metrics are computed after
restoring that checkpoint (`load_model`), as the upstream notebooks do. The
test evaluation seconds cover one `run_eval` on the test file, including its
parsing (the test file has not been read before).

The last line of stdout is one JSON object with the results.
"""

import argparse
import json
import os
import random
import sys
import time

# Quieten TensorFlow's C++ info logs (stderr only; no effect on speed).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import recommenders  # pylint: disable=g-import-not-at-top
from recommenders.models.deeprec.deeprec_utils import prepare_hparams  # pylint: disable=g-import-not-at-top
from recommenders.models.deeprec.io.sequential_iterator import SequentialIterator  # pylint: disable=g-import-not-at-top
from recommenders.models.deeprec.models.sequential.asvd import A2SVDModel  # pylint: disable=g-import-not-at-top
from recommenders.models.deeprec.models.sequential.sequential_base_model import SequentialBaseModel  # pylint: disable=g-import-not-at-top
from recommenders.models.deeprec.models.sequential.sli_rec import SLI_RECModel  # pylint: disable=g-import-not-at-top

_DATA_FILES = ('train_data', 'valid_data', 'test_data', 'user_vocab.pkl',
               'item_vocab.pkl', 'category_vocab.pkl')


def _hparams_dict(args, data_dir, workdir):
  """Every hyperparameter of the upstream yaml (sli_rec.yaml / asvd.yaml).

  Values are those actually run by the Vector notebooks and the MS quick
  start: the yaml with epochs 10, embed_l2 = layer_l2 = 0 and show_step 20;
  A2SVD gets attention_size 40 (absent from the upstream asvd.yaml, without
  which the model cannot be built).
  """
  hparams = {
      # data
      'user_vocab': os.path.join(data_dir, 'user_vocab.pkl'),
      'item_vocab': os.path.join(data_dir, 'item_vocab.pkl'),
      'cate_vocab': os.path.join(data_dir, 'category_vocab.pkl'),
      # model
      'method': 'classification',
      'model_type': 'sli_rec' if args.model == 'slirec' else 'A2SVD',
      'layer_sizes': [100, 64],
      'activation': ['relu', 'relu'],
      'user_dropout': True,
      'dropout': [0.3, 0.3],
      'item_embedding_dim': 32,
      'cate_embedding_dim': 8,
      'user_embedding_dim': 16,
      # train
      'init_method': 'tnormal',
      'init_value': 0.01,
      'embed_l2': 0.0,
      'embed_l1': 0.0,
      'layer_l2': 0.0,
      'layer_l1': 0.0,
      'cross_l2': 0.0,
      'cross_l1': 0.0,
      'learning_rate': 0.001,
      'loss': 'softmax',
      'optimizer': 'adam',
      'epochs': args.epochs,
      'batch_size': args.batch_size,
      'enable_BN': True,
      'EARLY_STOP': 10,
      'max_seq_length': 50,
      'hidden_size': 40,
      'attention_size': 40,
      'need_sample': True,
      'train_num_ngs': args.train_negatives,
      'min_seq_length': 1,
      'is_clip_norm': 0,
      'max_grad_norm': 2,
      'embedding_dropout': 0.0,
      # info
      'show_step': 20,
      'save_model': True,
      'save_epoch': 1,
      'metrics': ['auc', 'logloss'],
      'pairwise_metrics': ['mean_mrr', 'ndcg@2;4;6', 'group_auc'],
      'write_tfevents': bool(args.summaries),
      # fit() joins MODEL_DIR + 'epoch_N' with '+': keep the trailing slash.
      'MODEL_DIR': os.path.join(workdir, 'model') + os.sep,
      'SUMMARIES_DIR': os.path.join(workdir, 'summary') + os.sep,
  }
  if args.model == 'slirec':
    hparams['att_fcn_layer_sizes'] = [80, 40]
  return hparams


class _TimedFitMixin:
  """Records the time spent in validation and checkpoint saving during fit."""

  def _timing_reset(self):
    # (kind, start, end, cpu_start, cpu_end), kind 'eval' | 'save'; wall
    # seconds from perf_counter, process CPU seconds from process_time.
    self.timing_events = []
    self.valid_results = []
    saver = self.saver
    original_save = saver.save

    def timed_save(*a, **kw):
      start, cpu_start = time.perf_counter(), time.process_time()
      try:
        return original_save(*a, **kw)
      finally:
        self.timing_events.append(('save', start, time.perf_counter(),
                                   cpu_start, time.process_time()))

    saver.save = timed_save

  def run_eval(self, filename, num_ngs):
    start, cpu_start = time.perf_counter(), time.process_time()
    res = super().run_eval(filename, num_ngs)
    self.timing_events.append(('eval', start, time.perf_counter(), cpu_start,
                               time.process_time()))
    self.valid_results.append(res)
    return res


class TimedSLIRec(_TimedFitMixin, SLI_RECModel):
  pass


class TimedA2SVD(_TimedFitMixin, A2SVDModel):
  pass


def _count_train_positives(path, min_seq_length=1):
  """Positive lines the iterator uses per epoch (history >= min length)."""
  positives, other = 0, 0
  with open(path) as f:
    for line in f:
      cols = line.rstrip('\n').split('\t')
      if len(cols) < 8:
        continue
      hist = [h for h in cols[5].split(',') if h]
      if len(hist) < min_seq_length:
        continue
      if float(cols[0]) > 0:
        positives += 1
      else:
        other += 1
  return positives, other


def _count_lines(path):
  with open(path) as f:
    return sum(1 for _ in f)


def _clean(metrics):
  return {k: float(v) for k, v in metrics.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data_dir', required=True)
  parser.add_argument('--model', choices=('slirec', 'a2svd'), required=True)
  parser.add_argument('--epochs', type=int, default=10)
  parser.add_argument('--batch_size', type=int, default=400)
  parser.add_argument('--train_negatives', type=int, default=4)
  parser.add_argument('--valid_negatives', type=int, default=4)
  parser.add_argument('--test_negatives', type=int, default=9)
  parser.add_argument('--seed', type=int, default=42)
  parser.add_argument('--workdir', required=True,
                      help='checkpoints and tf summaries go here')
  parser.add_argument('--summaries', type=int, default=1, choices=(0, 1),
                      help='write_tfevents (1 = as in the upstream yaml)')
  args = parser.parse_args(argv)

  data_dir = os.path.abspath(args.data_dir)
  for name in _DATA_FILES:
    if not os.path.isfile(os.path.join(data_dir, name)):
      parser.error(f'missing {name} in {data_dir}')
  workdir = os.path.abspath(args.workdir)
  os.makedirs(workdir, exist_ok=True)
  train_file = os.path.join(data_dir, 'train_data')
  valid_file = os.path.join(data_dir, 'valid_data')
  test_file = os.path.join(data_dir, 'test_data')

  train_positives, train_negatives_in_file = _count_train_positives(train_file)
  if train_negatives_in_file:
    print(f'warning: {train_negatives_in_file} non-positive lines in '
          'train_data; the iterator treats every line as a positive',
          file=sys.stderr)
  for path, ngs in ((valid_file, args.valid_negatives),
                    (test_file, args.test_negatives)):
    n = _count_lines(path)
    if n % (ngs + 1):
      parser.error(f'{path} has {n} lines, not a multiple of {ngs + 1}')
    if args.batch_size % (ngs + 1):
      parser.error(f'batch_size {args.batch_size} not a multiple of {ngs + 1}')

  # The iterator shuffles and draws train negatives with Python's `random`,
  # which the upstream model does not seed (it seeds TF and numpy).
  random.seed(args.seed)
  np.random.seed(args.seed)

  hparams_dict = _hparams_dict(args, data_dir, workdir)
  with open(os.path.join(workdir, 'hparams.json'), 'w') as f:
    json.dump(hparams_dict, f, indent=2)
  hparams = prepare_hparams(yaml_file=None, **hparams_dict)
  model_cls = TimedSLIRec if args.model == 'slirec' else TimedA2SVD

  build_start = time.perf_counter()
  model = model_cls(hparams, SequentialIterator, seed=args.seed)
  build_seconds = time.perf_counter() - build_start
  session_config = model.sess._config  # pylint: disable=protected-access
  model._timing_reset()  # pylint: disable=protected-access

  load_before = os.getloadavg()
  fit_start, fit_cpu_start = time.perf_counter(), time.process_time()
  model.fit(train_file, valid_file, valid_num_ngs=args.valid_negatives)
  fit_end, fit_cpu_end = time.perf_counter(), time.process_time()
  fit_seconds = fit_end - fit_start
  load_after = os.getloadavg()
  events = model.timing_events
  train_seconds = fit_seconds - sum(e[2] - e[1] for e in events)
  train_cpu_seconds = (fit_cpu_end - fit_cpu_start
                       - sum(e[4] - e[3] for e in events))
  epoch_seconds, mark = [], fit_start
  for kind, start, end, _, _ in events:
    if kind == 'eval':
      epoch_seconds.append(start - mark)
    mark = end
  epochs_run = len(model.valid_results)

  best_path = os.path.join(hparams.MODEL_DIR, 'best_model')
  model.load_model(best_path)
  test_start = time.perf_counter()
  # The upstream run_eval, bypassing the timing hook (valid only).
  test_res = SequentialBaseModel.run_eval(model, test_file, args.test_negatives)
  test_eval_seconds = time.perf_counter() - test_start

  result = {
      'model': args.model,
      'epochs': epochs_run,
      'train_positives': train_positives,
      'train_seconds': train_seconds,
      'train_positives_per_second': train_positives * epochs_run
                                    / train_seconds,
      'test_eval_seconds': test_eval_seconds,
      'valid': _clean(model.valid_results[-1]),
      'test': _clean(test_res),
      'tf_version': tf.__version__,
      'recommenders_version': recommenders.__version__,
      # Extras.
      'best_epoch': model.best_epoch,
      'test_checkpoint': 'best_model (best valid group_auc)',
      'train_seconds_per_epoch': epoch_seconds,
      'valid_per_epoch': [_clean(r) for r in model.valid_results],
      'fit_seconds': fit_seconds,
      'valid_eval_seconds': sum(e[2] - e[1] for e in events
                                if e[0] == 'eval'),
      'checkpoint_save_seconds': sum(e[2] - e[1] for e in events
                                     if e[0] == 'save'),
      # Process CPU seconds (all threads) of the training part: divided by
      # train_seconds it tells how many cores the run actually got.
      'train_cpu_seconds': train_cpu_seconds,
      'build_seconds': build_seconds,
      'valid_lines': _count_lines(valid_file),
      'test_lines': _count_lines(test_file),
      'batch_size': args.batch_size,
      'train_negatives': args.train_negatives,
      'valid_negatives': args.valid_negatives,
      'test_negatives': args.test_negatives,
      'seed': args.seed,
      'summaries': bool(args.summaries),
      'intra_op_threads': session_config.intra_op_parallelism_threads,
      'inter_op_threads': session_config.inter_op_parallelism_threads,
      'cpu_count': os.cpu_count(),
      # 1/5/15-minute load averages before and after fit: a 1-minute load
      # well above what this run adds (~cpu_count) means another process
      # competed for the cores and the timings are pessimistic.
      'loadavg_before_fit': list(load_before),
      'loadavg_after_fit': list(load_after),
      'onednn_opts': os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default'),
  }
  print(json.dumps(result))


if __name__ == '__main__':
  main()
