#!/bin/sh
# Install the mosquitto broker from Debian's packages (the tests run a private one).
set -e
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  echo "mosquitto is missing and I am not root: run 'apt-get install mosquitto' as root" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing mosquitto with apt-get"
$SUDO apt-get update -qq || { echo "apt-get update failed: install mosquitto by hand" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null \
  || { echo "apt-get install mosquitto failed: install it by hand" >&2; exit 1; }
# the package starts a system broker on 1883; the project never uses it
$SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
