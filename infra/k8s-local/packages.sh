#!/usr/bin/env bash
# Installs the Debian packages the local cluster and the image builds use (idempotent; ~20 s cold).
source "$(dirname "$0")/lib.sh"
need_root
missing=()
for pkg in $HOST_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
step "apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages must not start their own daemons (Debian's containerd would): the scripts start what they need.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d.flywheel
chmod +x /usr/sbin/policy-rc.d.flywheel
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  ln -s /usr/sbin/policy-rc.d.flywheel /usr/sbin/policy-rc.d
  own_policy=1
fi
trap '[ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d; rm -f /usr/sbin/policy-rc.d.flywheel' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
step_done
