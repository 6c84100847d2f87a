#!/bin/sh
# vnode-tunnel: keeps `ssh -nNT -L <local socket>:<remote socket> <user@login-node>` up, so the
# agent's plugin socket reaches the plugin listening on the login node. When the link or the login
# node drops, ssh exits (ServerAlive* notices a dead link within ~30 s) and is restarted with a
# backoff of 1 s doubling to 30 s; a connection that lasted a minute resets the backoff.
#
# TUNNEL_DESTINATION   user@login-node (required)
# TUNNEL_LOCAL_SOCKET  the socket the agent dials, created here (required)
# TUNNEL_REMOTE_SOCKET the plugin's socket on the login node (required)
# TUNNEL_PORT          login node's SSH port (22)
# TUNNEL_KEY_FILE      private key (/etc/vnode-tunnel/key/id_ed25519)
# TUNNEL_KNOWN_HOSTS   known_hosts file pinning the login node; unset: accept-new
# Extra arguments go to ssh (before the destination).
set -u

: "${TUNNEL_DESTINATION:?set TUNNEL_DESTINATION to user@login-node}"
: "${TUNNEL_LOCAL_SOCKET:?set TUNNEL_LOCAL_SOCKET to the socket the agent dials}"
: "${TUNNEL_REMOTE_SOCKET:?set TUNNEL_REMOTE_SOCKET to the plugin socket on the login node}"
port=${TUNNEL_PORT:-22}
key=${TUNNEL_KEY_FILE:-/etc/vnode-tunnel/key/id_ed25519}
ssh=${SSH:-ssh}

work=$(mktemp -d)
# ssh refuses a private key others can read; the Secret's file is group-readable (fsGroup).
if ! install -m 0600 "$key" "$work/id"; then
  echo "vnode-tunnel: cannot read the private key $key" >&2
  exit 1
fi
if [ -n "${TUNNEL_KNOWN_HOSTS:-}" ]; then
  hostcheck="-o UserKnownHostsFile=$TUNNEL_KNOWN_HOSTS -o StrictHostKeyChecking=yes"
else
  hostcheck="-o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=accept-new"
fi

child=
stop() {
  [ -n "$child" ] && kill "$child" 2>/dev/null
  rm -rf "$work"
  exit 0
}
trap stop TERM INT

delay=1
while :; do
  started=$(date +%s)
  # shellcheck disable=SC2086  # $hostcheck is two options on purpose
  "$ssh" -nNT -i "$work/id" -p "$port" $hostcheck \
    -o IdentitiesOnly=yes -o BatchMode=yes -o ExitOnForwardFailure=yes \
    -o ConnectTimeout=10 -o ServerAliveInterval=10 -o ServerAliveCountMax=3 \
    -o StreamLocalBindUnlink=yes -o StreamLocalBindMask=0117 \
    -L "$TUNNEL_LOCAL_SOCKET:$TUNNEL_REMOTE_SOCKET" "$@" "$TUNNEL_DESTINATION" &
  child=$!
  wait "$child"
  rc=$?
  child=
  if [ $(( $(date +%s) - started )) -ge 60 ]; then
    delay=1
  fi
  echo "vnode-tunnel: ssh to $TUNNEL_DESTINATION exited ($rc); reconnecting in ${delay}s" >&2
  sleep "$delay" &
  child=$!
  wait "$child"
  child=
  delay=$(( delay * 2 ))
  [ "$delay" -gt 30 ] && delay=30
done
