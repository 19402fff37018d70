#!/bin/sh
# Puts the OpenVPN server's configuration and its first-boot key maker in
# place. The keys themselves are made on each instance, never here.
set -eu

: "${STAGING:?STAGING must name the directory the files were uploaded to}"

install -d -m 0755 /etc/openvpn/server
install -m 0644 "$STAGING/server.conf" /etc/openvpn/server/server.conf
install -m 0755 "$STAGING/openvpn-firstboot" /usr/local/sbin/openvpn-firstboot
install -m 0644 "$STAGING/openvpn-firstboot.service" /etc/systemd/system/openvpn-firstboot.service
install -d -m 0755 /etc/systemd/system/openvpn-server@server.service.d
install -m 0644 "$STAGING/firstboot.conf" /etc/systemd/system/openvpn-server@server.service.d/firstboot.conf
install -m 0644 "$STAGING/60-openvpn-forward.conf" /etc/sysctl.d/60-openvpn-forward.conf

systemctl daemon-reload
systemctl enable openvpn-firstboot.service openvpn-server@server.service
# Enabled, not started: starting would make keys on the build instance.
systemctl is-enabled openvpn-firstboot.service openvpn-server@server.service

rm -rf "$STAGING"
