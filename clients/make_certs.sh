#!/usr/bin/env bash
# Coordinator: create a private CA and the SuperLink's TLS certificate (openssl).
#
#   clients/make_certs.sh OUTDIR [--ca-dir CADIR] [NAME_OR_IP ...]
#
# OUTDIR (the SuperLink's certificate directory) gets ca.crt (give it to every hospital),
# server.pem and server.key. The CA's private key ca.key (and its serial file) goes to CADIR,
# by default OUTDIR-ca beside it, never into OUTDIR: move CADIR offline (a USB key, a vault);
# start_superlink.sh refuses a directory that holds ca.key. The certificate's subject
# alternative names are localhost, 127.0.0.1, ::1 and every NAME_OR_IP given: list the DNS
# name and/or IP address hospitals use to reach the SuperLink, or their TLS check fails.
# Existing files are never overwritten.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,12p' "$0"; exit 2
fi
out="${1%/}"; shift
cadir="$out-ca"
names=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ca-dir) cadir="${2%/}"; shift 2;;
    *) names+=("$1"); shift;;
  esac
done
if [[ "$(cd "$(dirname "$cadir")" 2>/dev/null && pwd)/$(basename "$cadir")" == "$(mkdir -p "$out" && cd "$out" && pwd)" ]]; then
  echo "make_certs: --ca-dir must not be the SuperLink's directory $out" >&2; exit 2
fi
mkdir -p "$out"
if [[ -e "$cadir/ca.key" || -e "$out/ca.key" || -e "$out/server.key" ]]; then
  echo "make_certs: $out or $cadir already holds ca.key/server.key; refusing to overwrite" >&2; exit 1
fi
sans="DNS:localhost,IP:127.0.0.1,IP:::1"
for h in ${names[@]+"${names[@]}"}; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then sans+=",IP:$h"; else sans+=",DNS:$h"; fi
done
umask 077
mkdir -p "$cadir"
chmod 700 "$cadir"
openssl genrsa -out "$cadir/ca.key" 4096 2>/dev/null
openssl req -new -x509 -key "$cadir/ca.key" -sha256 -days 825 -subj "/CN=FedMedSec federation CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$out/ca.crt"
openssl genrsa -out "$out/server.key" 2048 2>/dev/null
openssl req -new -key "$out/server.key" -subj "/CN=fedmedsec-superlink" -out "$out/server.csr"
cat > "$out/server.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$sans
EXT
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$cadir/ca.key" \
  -CAserial "$cadir/ca.srl" -CAcreateserial \
  -days 825 -sha256 -extfile "$out/server.ext" -out "$out/server.pem" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"
cp "$out/ca.crt" "$cadir/ca.crt"
chmod 644 "$out/ca.crt" "$out/server.pem" "$cadir/ca.crt"
echo "make_certs: wrote $out/{ca.crt,server.pem,server.key} and $cadir/ca.key (move $cadir offline); SANs: $sans"
