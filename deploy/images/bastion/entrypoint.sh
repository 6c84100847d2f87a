#!/bin/sh
# vnode-ssh: `bastion` runs sshd for the login node's reverse tunnel; `tunnel` runs the ssh client
# that keeps a forward to the login node up (tunnel.sh).
#
# bastion: authorized keys from $BASTION_KEYS_DIR/authorized_keys (the chart's Secret) plus
# $PUBLIC_KEY_URL; the host key from $BASTION_KEYS_DIR/ssh_host_ed25519_key, else generated.
# Extra arguments go to sshd (e.g. -o Port=...). Paths are variables so tests can run this file
# outside a container.
set -eu

mode=${1:-bastion}
[ $# -gt 0 ] && shift

case "$mode" in
tunnel)
  exec "${TUNNEL_SCRIPT:-/usr/local/bin/vnode-tunnel}" "$@"
  ;;
bastion) ;;
*)
  echo "vnode-ssh: unknown mode '$mode' (bastion or tunnel)" >&2
  exit 2
  ;;
esac

user=${BASTION_USER:-interlink}
keys_dir=${BASTION_KEYS_DIR:-/etc/vnode-bastion/keys}
config=${BASTION_SSHD_CONFIG:-/etc/vnode-bastion/sshd_config}
state=${BASTION_STATE_DIR:-/etc/ssh/vnode}
sshd=${SSHD:-/usr/sbin/sshd}
port=${BASTION_PORT:-2222}  # the container port the chart's Service targets

# sshd's privilege-separation directory (Debian's init script creates it; there is none here).
mkdir -p /run/sshd
chmod 0755 /run/sshd
mkdir -p "$state"
chmod 0755 "$state"

# authorized_keys must be owned by root and not writable by others (StrictModes); the Secret's
# mount is neither, so the keys are copied.
auth="$state/authorized_keys"
: > "$auth.new"
if [ -f "$keys_dir/authorized_keys" ]; then
  cat "$keys_dir/authorized_keys" >> "$auth.new"
  echo >> "$auth.new"
fi
if [ -n "${PUBLIC_KEY_URL:-}" ]; then
  if ! curl -fsSL --max-time 30 "$PUBLIC_KEY_URL" >> "$auth.new"; then
    echo "vnode-ssh: cannot fetch authorized keys from $PUBLIC_KEY_URL" >&2
    exit 1
  fi
  echo >> "$auth.new"
fi
if ! grep -q '^[[:space:]]*[a-z]' "$auth.new"; then
  echo "vnode-ssh: no authorized keys (sshBastion.clientKeys.authorizedKeys or keysURL); nobody could log in" >&2
  exit 1
fi
chmod 0644 "$auth.new"
mv "$auth.new" "$auth"

hostkey="$state/ssh_host_ed25519_key"
if [ -f "$keys_dir/ssh_host_ed25519_key" ]; then
  install -m 0600 "$keys_dir/ssh_host_ed25519_key" "$hostkey"
elif [ ! -f "$hostkey" ]; then
  # A fresh key per start: clients must accept it anew (set sshBastion.hostKeys to pin one).
  ssh-keygen -q -t ed25519 -N '' -C "vnode-bastion" -f "$hostkey"
fi
echo "vnode-ssh: host key $(ssh-keygen -l -f "$hostkey")" >&2

# Command-line options come first and win over the config file (Port and ListenAddress add up,
# so the config file sets neither).
listen=
if [ -n "${BASTION_LISTEN:-}" ]; then
  listen="-o ListenAddress=$BASTION_LISTEN"
fi
# shellcheck disable=SC2086  # $listen is one option or nothing
exec "$sshd" -D -e -f "$config" $listen \
  -o "Port=$port" \
  -o "HostKey=$hostkey" \
  -o "AuthorizedKeysFile=$auth" \
  -o "AllowUsers=$user" \
  "$@"
