#!/usr/bin/env bash
# Debian packages the deployment tests run for real (tests/deploy/): nginx in front of stenod,
# Prometheus and promtool on the shipped monitoring config, systemd-analyze on the units; Chromium
# (with a font) for the browser-page tests (tests/web/); curl for the whisper.cpp README commands
# (tests/api/test_whispercpp_compat.py).
# Idempotent: installs only what is missing (apt-get update first); waits for another apt to finish.
set -euo pipefail
PACKAGES=(nginx prometheus systemd chromium fonts-liberation curl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT=(-o DPkg::Lock::Timeout=600 -y -qq)
$SUDO apt-get "${APT[@]:0:2}" update -qq
# policy-rc.d exit 101: packages must not start their own daemons (the tests start them on
# loopback ports of their choosing).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT[@]}" install --no-install-recommends "${missing[@]}"
