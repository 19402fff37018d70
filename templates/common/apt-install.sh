#!/bin/sh
# Installs the packages named in $PACKAGES from the distribution's
# repositories, without questions and without recommends.
set -eu

: "${PACKAGES:?PACKAGES must name the packages to install}"
export DEBIAN_FRONTEND=noninteractive
# apt-daily may still hold the lock on a freshly booted instance: wait for
# it rather than fail.
apt_get() {
  apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 "$@"
}

# No translated descriptions: nobody reads them on a server, and parsing
# them is most of what an update costs on a slow instance.
apt_get -o Acquire::Languages=none update -q
# shellcheck disable=SC2086 # PACKAGES is a list of words.
apt_get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  $PACKAGES
# shellcheck disable=SC2086
dpkg-query -W -f '${Package} ${Version}\n' $PACKAGES
