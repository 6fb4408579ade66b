"""A stateful Quix Streams app: a running total of clicks per user (keyed by user).

It runs in its own virtualenv (quixstreams pins an older confluent-kafka than the one the
rest of the suite tests), so the test starts it as a subprocess:
``python quix_counter_app.py BOOTSTRAP STATE_DIR RECORDS``.
"""

import sys

from quixstreams import Application

bootstrap, state_dir, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = Application(
    broker_address=bootstrap,
    consumer_group="quix-counter",
    auto_offset_reset="earliest",
    state_dir=state_dir,
    processing_guarantee="exactly-once",
)
clicks = app.topic("clicks", value_deserializer="json")
totals = app.topic("click-totals", value_serializer="json")


def add_clicks(value: dict, state: object) -> dict:
    total = state.get("total", 0) + value["n"]  # type: ignore[attr-defined]
    state.set("total", total)  # type: ignore[attr-defined]
    return {"user": value["user"], "total": total}


app.dataframe(clicks).apply(add_clicks, stateful=True).to_topic(totals)
app.run(count=count, timeout=60)
