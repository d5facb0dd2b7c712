#!/usr/bin/env bash
# Installs the Debian packages the e2e test ground needs, only when missing (Debian bookworm,
# root, non-interactive). Go >= 1.26 is a prerequisite and not installed here: Debian's golang-go
# is too old.
source "$(dirname "$0")/lib.sh"

# package:command pairs; the command tells whether the package is already there. shellcheck is
# for `make lint`.
WANT=(prometheus:prometheus prometheus-pushgateway:prometheus-pushgateway openssl:openssl
  curl:curl ca-certificates:update-ca-certificates shellcheck:shellcheck)
# The real node (unless E2E_REAL_NODE=0): runc, the CNI plugins (bridge, host-local, loopback,
# portmap), nftables for kube-proxy, conntrack, socat for the unix-socket bridges between the
# node's network namespace and 127.0.0.1, iproute2 and util-linux (nsenter, unshare).
if [ "${E2E_REAL_NODE:-1}" != 0 ]; then
  WANT+=(runc:runc containernetworking-plugins:/usr/lib/cni/bridge nftables:nft conntrack:conntrack
    socat:socat iproute2:ip util-linux:nsenter)
fi
missing=()
for pc in "${WANT[@]}"; do
  c=${pc#*:}
  if [[ $c == /* ]]; then [ -x "$c" ] || missing+=("${pc%%:*}"); else command -v "$c" >/dev/null || missing+=("${pc%%:*}"); fi
done
if [ ${#missing[@]} -eq 0 ]; then
  log "install-deps: all present"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
# Debian starts prometheus (:9090) and the pushgateway (:9091) as services on install. The e2e
# cluster runs its own on other ports and must not depend on them, so policy-rc.d (exit 101 =
# "action forbidden") keeps invoke-rc.d from starting anything during this install. An existing
# policy-rc.d is left alone.
POLICY=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod 755 "$POLICY" && own_policy=true
fi
trap '$own_policy && rm -f "$POLICY"' EXIT

log "install-deps: installing ${missing[*]}"
apt-get update -qq
# --no-install-recommends: prometheus recommends node-exporter and friends, which we do not use.
apt-get install -y -qq --no-install-recommends "${missing[@]}"
log "install-deps: done"
