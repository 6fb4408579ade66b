#!/bin/sh
# A longer run of the protocol fuzzer than CI's (tests/broker/test_fuzz.py): EXAMPLES
# hypothesis examples of 60 cases each against one broker process.
# usage: tools/fuzz_broker.sh [EXAMPLES]   (default 20000: 1.2 million cases, ~30 min)
set -eu
cd "$(dirname "$0")/.."
ONCEFLOW_FUZZ_EXAMPLES="${1:-20000}" exec .venv/bin/python -m pytest \
    tests/broker/test_fuzz.py -q -s -p no:timeout
