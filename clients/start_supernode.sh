#!/usr/bin/env bash
# Hospital: start this hospital's Flower SuperNode (TLS and node authentication on).
#
#   clients/start_supernode.sh --superlink HOST:PORT --ca ca.crt --key PRIVATE_KEY \
#       --node-config node.toml [--port 9094] [--trusted-entities FILE.yaml] [--insecure]
#
# The SuperNode connects OUT to the SuperLink (no inbound port is opened to the outside; --port
# is a local-only API on 127.0.0.1 between the SuperNode and its ClientApp process, change it
# when several SuperNodes share one machine). --node-config is a TOML file (see
# clients/node-configs/) or 'partition-id=0 data-path="/data/x.csv" role="honest"'.
# Set data-path there: it is the only file this node opens (the experiment's data.path is
# replaced by it; a file dataset without it is refused). --trusted-entities (Flower's app
# verification) makes the node run only apps signed by one of the listed ed25519 keys; in
# Flower 1.42 only apps fetched from Flower Hub carry signatures, so with it a locally built
# app (`flwr run .`) is refused (docs/deployment.md). It keeps reconnecting if the SuperLink
# restarts. --insecure (no TLS, no authentication) is for a laptop demo only: it prints a warning.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then sed -n '2,17p' "$0"; exit 2; fi
superlink=""; ca=""; key=""; nodecfg=""; port="9094"; insecure=0; extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --superlink) superlink="$2"; shift 2;;
    --ca) ca="$2"; shift 2;;
    --key) key="$2"; shift 2;;
    --node-config) nodecfg="$2"; shift 2;;
    --port) port="$2"; shift 2;;
    --max-retries|--max-wait-time) extra+=("$1" "$2"); shift 2;;
    --trusted-entities)
      [[ -f "$2" ]] || { echo "start_supernode: --trusted-entities $2: no such file" >&2; exit 1; }
      extra+=("$1" "$2"); shift 2;;
    --insecure) insecure=1; shift;;
    *) echo "start_supernode: unknown argument $1" >&2; exit 2;;
  esac
done
[[ -n "$superlink" && -n "$nodecfg" ]] || { echo "start_supernode: --superlink and --node-config are required" >&2; exit 2; }
args=(--superlink "$superlink" --node-config "$nodecfg" --host 127.0.0.1 --port "$port" "${extra[@]}")
if [[ $insecure == 1 ]]; then
  echo "WARNING: --insecure: this SuperNode talks to the SuperLink WITHOUT TLS and WITHOUT" \
       "authentication; model updates travel in clear text. Never use this with real patient data." >&2
  exec flower-supernode --insecure "${args[@]}"
fi
[[ -f "$ca" ]] || { echo "start_supernode: --ca $ca: no such CA certificate (from the coordinator)" >&2; exit 1; }
[[ -f "$key" ]] || { echo "start_supernode: --key $key: no such private key (clients/make_node_key.sh)" >&2; exit 1; }
exec flower-supernode --root-certificates "$ca" --auth-supernode-private-key "$key" "${args[@]}"
