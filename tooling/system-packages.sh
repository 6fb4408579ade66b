#!/usr/bin/env bash
# The system packages the test suite needs: kcat (interop tests), PostgreSQL's server
# binaries (the tests start their own server), a JDK and Maven (Apache Kafka's jars and
# JVMs). As root, missing ones are installed with apt-get; otherwise one line says what
# to install, and the exit status is non-zero. Arguments name the packages to see to
# (`make demo` needs only postgresql); without any, all of them.
set -euo pipefail

wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(kcat postgresql openjdk-17-jdk-headless maven)

present() {
  case "$1" in
    kcat) command -v kcat >/dev/null ;;
    postgresql) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null ;;
    openjdk-17-jdk-headless) command -v java >/dev/null ;;
    maven) command -v mvn >/dev/null ;;
    *) echo "system-packages.sh: unknown package $1" >&2; exit 2 ;;
  esac
}

missing=()
for package in "${wanted[@]}"; do
  present "$package" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them, e.g. sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
