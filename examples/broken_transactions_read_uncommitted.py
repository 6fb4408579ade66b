"""BROKEN on purpose: transactions on the output, but the input read with
``read_uncommitted``. It acts on records of transactions its upstream aborted, so
outputs appear for inputs that were never written. The verifier reports them as
``aborted-read``: an aborted input reached the output.

The program is ``kafka_exactly_once`` with that one setting changed.
"""

from __future__ import annotations

from kafka_exactly_once import main

if __name__ == "__main__":
    main(isolation="read_uncommitted")
