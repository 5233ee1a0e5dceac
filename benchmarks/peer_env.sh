#!/usr/bin/env bash
# Builds (idempotently) the virtual environment that runs the TensorFlow peer
# of the sequential benchmark: Microsoft `recommenders` SLi-Rec / A2SVD.
#
# Usage: bash benchmarks/peer_env.sh
# The venv is benchmarks/.venv-recommenders (git-ignored). The last line
# printed is the path of the venv's python; run the peer with it:
#   "$(bash benchmarks/peer_env.sh | tail -1)" benchmarks/peer_recommenders.py ...
#
# recommenders 1.2.1 with tensorflow-cpu 2.15.1 installs and imports on
# Python 3.11 with no further pins (pip resolves numpy 1.26, keras 2.15,
# protobuf 4.25, pandas 2.x, scipy 1.13). Do not let TensorFlow float to
# >= 2.16: recommenders stopped supporting it (Keras 3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${here}/.venv-recommenders"
python_bin="${PYTHON:-python3}"
recommenders_version="1.2.1"
tensorflow_version="2.15.1"

if [[ ! -x "${venv}/bin/python" ]]; then
  "${python_bin}" -m venv "${venv}"
fi

installed() {
  "${venv}/bin/python" - "${recommenders_version}" "${tensorflow_version}" \
      >/dev/null 2>&1 <<'PY'
import sys
from importlib import metadata
want_rec, want_tf = sys.argv[1:3]
assert metadata.version("recommenders") == want_rec
assert metadata.version("tensorflow-cpu") == want_tf
PY
}

if ! installed; then
  "${venv}/bin/python" -m pip install --quiet --upgrade pip >&2
  "${venv}/bin/python" -m pip install --quiet \
    "recommenders==${recommenders_version}" \
    "tensorflow-cpu==${tensorflow_version}" >&2
  # Import check: fails loudly here rather than in the benchmark.
  "${venv}/bin/python" -c "
import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from recommenders.models.deeprec.models.sequential.sli_rec import SLI_RECModel
from recommenders.models.deeprec.models.sequential.asvd import A2SVDModel
from recommenders.models.deeprec.io.sequential_iterator import SequentialIterator
" >&2
fi

echo "${venv}/bin/python"
