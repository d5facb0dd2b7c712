#!/usr/bin/env bash
# Prints the environment of the e2e cluster as `export` lines:
#   eval "$(e2e/scripts/env.sh)"
# KUBECONFIG, PATH (pinned kubectl, helm, kwok... first), PROMETHEUS_URL, PUSHGATEWAY_URL and
# PHASELOOP_METRICS_PORT are what the Rust e2e tests read; E2E_NODE_NAME, E2E_NODE_NETNS,
# NODE_PROMETHEUS_URL and the E2E_GATEWAY_* ones those of the real node (the Gateway's admin URL
# is inside the node's network namespace).
source "$(dirname "$0")/lib.sh"
# PATH keeps the caller's entries after the pinned dirs ("$PATH" is expanded by the eval).
# shellcheck disable=SC2016 # $PATH is expanded by the shell that evals this, not here
printf 'export PATH=%q:"$PATH"\n' "$(e2e_bin_path)"
printf 'export %s=%q\n' \
  KUBECONFIG "$E2E_STATE/kubeconfig" \
  PROMETHEUS_URL "http://127.0.0.1:$E2E_PROMETHEUS_PORT" \
  PUSHGATEWAY_URL "http://127.0.0.1:$E2E_PUSHGATEWAY_PORT" \
  PHASELOOP_METRICS_PORT "$PHASELOOP_METRICS_PORT" \
  E2E_STATE "$E2E_STATE" \
  E2E_CLUSTER "$E2E_CLUSTER" \
  E2E_ENV_CLUSTER "$E2E_CLUSTER" \
  E2E_KCM_PORT "$E2E_KCM_PORT" \
  E2E_NODE_NAME "$E2E_NODE_NAME" \
  E2E_NODE_NETNS "$E2E_NODE_NETNS" \
  NODE_PROMETHEUS_URL "http://127.0.0.1:$E2E_NODE_PROMETHEUS_PORT" \
  E2E_GATEWAY_NAMESPACE "$E2E_GATEWAY_NAMESPACE" \
  E2E_GATEWAY_NAME "$E2E_GATEWAY_NAME" \
  E2E_GATEWAY_ADMIN_URL "http://127.0.0.1:$E2E_GATEWAY_ADMIN_PORT"
