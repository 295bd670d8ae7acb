#!/usr/bin/env bash
# Installs Redis 7 (Debian's redis-server, which also brings redis-cli) for
# the shared feature store's tests, once. The tests start their own servers
# on free loopback ports; nothing here starts one, and the package's system
# service is left stopped so it does not hold port 6379.
#
#   scripts/ensure-redis.sh           install if missing (quick when present)
#   scripts/ensure-redis.sh --print   print the redis-server path
set -euo pipefail

have() {
  command -v redis-server >/dev/null 2>&1 &&
    redis-server --version | grep -Eq 'v=(7|8)\.'
}

if ! have; then
  echo "ensure-redis: installing redis-server (Debian package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # The package's post-install starts its service unless told not to.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

if [[ "${1:-}" == "--print" ]]; then
  command -v redis-server
fi
