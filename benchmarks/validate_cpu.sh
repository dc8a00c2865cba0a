#!/usr/bin/env bash
# Reproduce the CPU validation results in validation/ (docs/validation.md reads them).
#
# Needs PyTorch (CPU wheel: pip install torch==2.13.0). Run on an otherwise idle machine: timings of a
# 2-core box shared with other work are noisy (see the load average recorded in each report).
#   1. the CI-sized quick validation (~1 min on 2 cores);
#   2. a wider sweep of the same 2-layer OLMoE model: decode batch 1..32 at 128 and 1024 tokens of context,
#      and prefills of 128..1024 tokens (~4 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
capsim validate --quick || echo "quick validation failed its gate (see the report)"
capsim validate --full --threads 1 --layers 2 \
  --batch 1 --batch 2 --batch 4 --batch 8 --batch 16 --batch 32 \
  --context 128 --context 1024 \
  --prefill 1x128 --prefill 1x512 --prefill 1x1024 --prefill 4x256 \
  || echo "wide validation failed its gate (see the report)"
