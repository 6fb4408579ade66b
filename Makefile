# Both targets work on a fresh machine: they create .venv on first use, and `make test`
# installs the system packages and fetches the Apache Kafka jars it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Quix Streams pins an older confluent-kafka than the suite tests, so its interop test
# and the pipeline benchmark's reference run use a virtualenv of their own.
QUIX_VENV := .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed
# Apache Kafka's server jars (and the log4j2 backend its tarball adds), from Maven
# Central, for the tests and benchmarks that run real Kafka JVMs. Never committed.
KAFKA_LIBS := .kafka/libs
KAFKA_STAMP := $(KAFKA_LIBS)/.installed
# The Java test programs of tests/java (Kafka's Java client and Kafka Streams from Maven
# Central), compiled into tests/java/target with their runtime jars. Never committed.
JAVA_TESTS_STAMP := tests/java/target/.built
JAVA_TESTS_SOURCES := $(shell find tests/java/src -name '*.java')

.PHONY: demo demo-kafka test test-fast lint format bench kafka java-tests system-packages clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(QUIX_STAMP): pyproject.toml
	test -x $(QUIX_VENV)/bin/python || $(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $(QUIX_STAMP)

system-packages:
	@tooling/system-packages.sh

$(KAFKA_STAMP): tooling/kafka/pom.xml | system-packages
	rm -rf $(KAFKA_LIBS)
	mvn -B -q -Dstyle.color=never -f tooling/kafka/pom.xml dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS)
	touch $(KAFKA_STAMP)

kafka: $(KAFKA_STAMP)

$(JAVA_TESTS_STAMP): tests/java/pom.xml $(JAVA_TESTS_SOURCES) | system-packages
	mvn -B -q -Dstyle.color=never -f tests/java/pom.xml package
	touch $(JAVA_TESTS_STAMP)

java-tests: $(JAVA_TESTS_STAMP)

# The demo's fault matrix includes the exactly-once sink on a PostgreSQL server it starts.
demo: $(STAMP)
	@tooling/system-packages.sh postgresql
	$(PY) -m onceflow demo

# What acks and min.insync.replicas promise, measured on a 3-node Apache Kafka cluster.
demo-kafka: $(STAMP) $(KAFKA_STAMP)
	$(PY) -m onceflow replication

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples tooling
	$(VENV)/bin/ruff format --check src tests bench examples tooling

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench examples tooling
	$(VENV)/bin/ruff check --fix src tests bench examples tooling

test: lint system-packages $(QUIX_STAMP) $(KAFKA_STAMP) $(JAVA_TESTS_STAMP)
	$(PY) -m pytest

# Everything but the JVMs (Apache Kafka, the Java clients), for a quicker loop.
test-fast: lint system-packages $(QUIX_STAMP)
	$(PY) -m pytest -m 'not kafka and not java'

bench: $(STAMP) $(QUIX_STAMP) $(KAFKA_STAMP)
	$(PY) bench/broker_throughput.py
	$(PY) bench/multi_client.py
	$(PY) bench/transactional_throughput.py
	$(PY) bench/pipeline_throughput.py
	$(PY) bench/startup.py
	$(PY) bench/roll_latency.py
	$(PY) bench/request_decode.py

clean:
	rm -rf $(VENV) $(QUIX_VENV) .kafka tests/java/target build dist src/*.egg-info
