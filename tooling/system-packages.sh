#!/usr/bin/env bash
# The system packages the test suite needs: kcat (interop tests), PostgreSQL's server
# binaries (the tests start their own server), a JDK and Maven (Apache Kafka's jars and
# JVMs). As root, missing ones are installed with apt-get; otherwise one line says what
# to install, and the exit status is non-zero.
set -euo pipefail

missing=()
command -v kcat >/dev/null || missing+=(kcat)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v java >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
