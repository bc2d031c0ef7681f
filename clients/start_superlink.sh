#!/usr/bin/env bash
# Coordinator: start the Flower SuperLink with TLS and SuperNode authentication.
#
#   clients/start_superlink.sh CERTDIR [--host 0.0.0.0] [--port 9093] [--database FILE] [--insecure]
#
# CERTDIR holds ca.crt, server.pem, server.key (from clients/make_certs.sh) and must NOT hold
# ca.key (refused: the CA key stays offline). Only SuperNodes whose public key was registered
# (clients/register_node.sh) may connect. In Flower 1.42 the one HTTPS port serves the Fleet API
# (/v1/fleet: hospitals), the Control API (/v1/control: `flwr run`, `flwr supernode register`)
# and the Runtime API (the ServerApp); the open-source SuperLink has no user authentication for
# the Control API (OIDC is Flower Enterprise only) and cannot bind it apart from the Fleet API
# (--control-api-address is deprecated and ignored). So whoever reaches this port can submit an
# app: --host 127.0.0.1 (the default) keeps every API on the coordinator; to let hospitals in,
# give --host 0.0.0.0 AND restrict the port to the hospitals' addresses (firewall) or put a TLS
# proxy in front that passes only /v1/fleet/ (docs/deployment.md, SECURITY.md).
# The ServerApp writes run directories only under $FEDMEDSEC_OUT_ROOT (default: ./runs).
# --database keeps registrations and runs across restarts (default: in memory). --insecure (no
# TLS, no node authentication) is for a laptop demo only: it prints a warning.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then sed -n '2,20p' "$0"; exit 2; fi
certs=""; host="127.0.0.1"; port="9093"; db=""; insecure=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --host) host="$2"; shift 2;;
    --port) port="$2"; shift 2;;
    --database) db="$2"; shift 2;;
    --insecure) insecure=1; shift;;
    -*) echo "start_superlink: unknown option $1" >&2; exit 2;;
    *) certs="$1"; shift;;
  esac
done
args=(--host "$host" --port "$port" --disable-runtime-dependency-installation)
export FEDMEDSEC_OUT_ROOT="${FEDMEDSEC_OUT_ROOT:-$PWD/runs}"
case "$host" in
  127.*|localhost|::1) ;;
  *) echo "NOTICE: the SuperLink listens on $host:$port, and so does its Control API (flwr run):" \
          "Flower 1.42 has no user authentication for it. Restrict this port to the hospitals'" \
          "addresses, or pass only /v1/fleet/ through a proxy (docs/deployment.md)." >&2;;
esac
[[ -n "$db" ]] && args+=(--database "$db")
if [[ $insecure == 1 ]]; then
  echo "WARNING: --insecure: the SuperLink runs WITHOUT TLS and WITHOUT SuperNode authentication;" \
       "model updates travel in clear text and any machine can join. Never use this with real hospitals." >&2
  exec flower-superlink --insecure "${args[@]}"
fi
[[ -n "$certs" ]] || { echo "start_superlink: give CERTDIR (clients/make_certs.sh) or --insecure" >&2; exit 2; }
for f in ca.crt server.pem server.key; do
  [[ -f "$certs/$f" ]] || { echo "start_superlink: $certs/$f missing (run clients/make_certs.sh)" >&2; exit 1; }
done
if [[ -e "$certs/ca.key" ]]; then
  echo "start_superlink: $certs holds ca.key, the CA's private key: move it offline (whoever reads it" \
       "can mint a SuperLink certificate every hospital trusts); the SuperLink needs only ca.crt," \
       "server.pem and server.key" >&2; exit 1
fi
exec flower-superlink --ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/server.pem" \
  --ssl-keyfile "$certs/server.key" --enable-supernode-auth "${args[@]}"
