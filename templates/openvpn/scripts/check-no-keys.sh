#!/bin/sh
# The image must carry no key material: every instance makes its own on
# first boot. Fails the build if any is found.
set -eu

found=$(find /etc/openvpn \( -name '*.key' -o -name '*.crt' -o -name '*.pem' -o -name '*.req' -o -name pki \) -print)
if [ -n "$found" ]; then
  echo "key material would be baked into the image:" >&2
  echo "$found" >&2
  exit 1
fi
if systemctl is-active --quiet openvpn-server@server.service; then
  echo "openvpn-server@server is running on the build instance" >&2
  exit 1
fi
echo "no OpenVPN keys in the image"
