#!/usr/bin/env bash
# Creates a SoftHSM2 token for hsm-signer outside the service (for example to run it with
# HSM_MODULE/HSM_TOKEN_LABEL as if it were a real HSM). Idempotent: an existing token with the
# label is left alone. The embedded default (`npm start`) does not need this script.
#
#   TOKEN_DIR=/var/lib/softhsm/tokens LABEL=hsm-signer \
#   USER_PIN_FILE=/run/secrets/hsm-pin SO_PIN_FILE=/run/secrets/hsm-so-pin softhsm/init-token.sh
set -euo pipefail
: "${TOKEN_DIR:?set TOKEN_DIR}" "${USER_PIN_FILE:?set USER_PIN_FILE}" "${SO_PIN_FILE:?set SO_PIN_FILE}"
LABEL="${LABEL:-hsm-signer}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$TOKEN_DIR"
conf="${SOFTHSM2_CONF:-$TOKEN_DIR/../softhsm2.conf}"
[ -f "$conf" ] || sed "s#@TOKEN_DIR@#$TOKEN_DIR#" "$here/softhsm2.conf.template" > "$conf"
export SOFTHSM2_CONF="$conf"
umask 077
for f in "$USER_PIN_FILE" "$SO_PIN_FILE"; do [ -s "$f" ] || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f"; done
if softhsm2-util --show-slots | grep -q "Label:[[:space:]]*$LABEL\$"; then
  echo "token '$LABEL' already exists"
  exit 0
fi
# PINs go through files and stdin-free flags; softhsm2-util has no PIN-from-file option, so
# they are on its command line for the moment it runs (this script is for setup, not for a shared host).
softhsm2-util --init-token --free --label "$LABEL" --so-pin "$(cat "$SO_PIN_FILE")" --pin "$(cat "$USER_PIN_FILE")" >/dev/null
echo "created token '$LABEL' (SOFTHSM2_CONF=$conf)"
