#!/usr/bin/env bash
# Makes a development CA, a server certificate and a client certificate for trying Trent's TLS and mutual TLS
# locally and with docker/compose.yaml. Not for production: the CA key sits beside the certificates, unencrypted.
#
#   scripts/make-dev-certs.sh DIR [NAME]
#
# DIR gets (keys 0600):
#   ca.pem  ca.key               the development CA (server.tls.clientCAFile for mTLS; --ca-bundle / verify= for clients)
#   server.pem  server.key       leaf then CA chain; SANs localhost, 127.0.0.1, ::1 and NAME (default: trent)
#                                (server.tls.certificateFile / server.tls.privateKeyFile)
#   client.pem  client.key       a client certificate (CN trent-client, extendedKeyUsage clientAuth) for mutual TLS
# Existing files in DIR are replaced.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 DIR [NAME]" >&2
    exit 2
fi
dir=$1
name=${2:-trent}
case "$name" in
    *[!A-Za-z0-9.-]* | "") echo "$0: NAME must be a DNS name (letters, digits, dots and dashes), not '$name'" >&2; exit 2 ;;
esac
mkdir -p "$dir"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
days=825  # the most a publicly trusted TLS certificate may have had; plenty for development

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
    -subj "/CN=Trent development CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null

issue() {  # issue BASENAME SUBJECT EXTENSIONS
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -subj "$2" \
        -keyout "$work/$1.key" -out "$work/$1.csr" 2>/dev/null
    printf '%s\n' "$3" > "$work/$1.ext"
    openssl x509 -req -in "$work/$1.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -sha256 -days "$days" \
        -extfile "$work/$1.ext" -out "$work/$1.leaf.pem" 2>/dev/null
}

issue server "/CN=$name" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,DNS:$name"
issue client "/CN=trent-client" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

cat "$work/server.leaf.pem" "$work/ca.pem" > "$work/server.pem"
cat "$work/client.leaf.pem" > "$work/client.pem"
for file in ca.pem ca.key server.pem server.key client.pem client.key; do
    install -m "$([ "${file%.key}" != "$file" ] && echo 600 || echo 644)" "$work/$file" "$dir/$file"
done
echo "Wrote $dir: ca.pem, server.pem/server.key (localhost, 127.0.0.1, ::1, $name), client.pem/client.key"
