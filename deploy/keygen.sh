#!/bin/sh
# One-shot key setup for docker-compose.yml (the `keygen` service), also usable by hand:
#
#   KEYS_DIR=./keys sh deploy/keygen.sh
#
# Creates a link identity for the central gateway and each edge (kept when they exist, so
# re-running never cuts a gateway off from the peers that pinned its key), writes each public
# key next to it (NAME.pub), and writes the central's authorized-peers file (peers.yaml)
# listing the edges. Private keys are mode 0600 and, when OWNER is set, owned by it.
set -eu
KEYS_DIR=${KEYS_DIR:-/keys}
EDGES=${EDGES:-edge-1 edge-2}
mkdir -p "$KEYS_DIR"
cd "$KEYS_DIR"
for name in central $EDGES; do
  if [ -f "$name.key" ]; then
    iii-gateway keygen --public "$name.key" > "$name.pub"
  else
    iii-gateway keygen "$name.key" > "$name.pub"
    echo "keygen: created $KEYS_DIR/$name.key"
  fi
done
{
  echo "# Written by keygen.sh: the peers the central gateway accepts, and their scopes."
  echo "peers:"
  for name in $EDGES; do
    echo "  - name: $name"
    echo "    public_key: $(cat "$name.pub")"
    echo '    read: ["*"]'
    echo '    write: ["*"]'
    echo '    watch: ["*"]'
  done
} > peers.yaml.tmp
mv peers.yaml.tmp peers.yaml
if [ -n "${OWNER:-}" ]; then
  chown "$OWNER" ./*.key ./*.pub peers.yaml
fi
chmod 0600 ./*.key
chmod 0644 ./*.pub peers.yaml
echo "keygen: central public key $(cat central.pub)"
