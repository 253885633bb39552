#!/usr/bin/env bash
# Remove what systemd/install.sh installed: `sudo systemd/uninstall.sh [--purge]`.
#
# Without --purge the configuration (/etc/yolo-edge: agent.toml, the broker password) and the state
# (/var/lib/yolo-edge: bundles, the outbox with events not yet delivered) stay, so a later install
# carries on where this one stopped.
set -euo pipefail

readonly SERVICE=yolo-edge-agent.service
readonly TEMPLATE=yolo-edge-agent@.service
readonly USER_NAME=yolo-edge

usage() {
	cat <<'EOF'
Usage: sudo uninstall.sh [--purge] [--root DIR]

Stops and disables yolo-edge-agent.service and every camera's yolo-edge-agent@NAME, removes the
units and /opt/yolo-edge (the venv). Keeps /etc/yolo-edge and /var/lib/yolo-edge unless --purge is given.

Options:
  --purge       also remove /etc/yolo-edge, /var/lib/yolo-edge, the units' drop-ins and the user yolo-edge
  --root DIR    remove from under DIR instead of / (tests): no root or systemd needed
  -h, --help    this text
EOF
}

die() {
	echo "uninstall.sh: $*" >&2
	exit 1
}

note() {
	echo "==> $*"
}

command_line="$0 $*"
root=""
purge=0
while (($#)); do
	case $1 in
	--root) root=${2:?--root needs a directory}; shift 2 ;;
	--purge) purge=1; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown option '$1' (see --help)" ;;
	esac
done

if [[ -z $root ]]; then
	[[ $(id -u) -eq 0 ]] || die "must run as root: sudo $command_line"
	[[ -d /run/systemd/system ]] || die "systemd is not running on this machine (no /run/systemd/system); nothing to uninstall from it"
else
	[[ -d $root ]] || die "--root $root is not a directory"
	root=$(cd "$root" && pwd)
	root=${root%/}
fi

unit_dir=$root/etc/systemd/system
unit=$unit_dir/$SERVICE
wants=$unit_dir/multi-user.target.wants

# The cameras (install.sh --instance): those enabled, and those with the CPU share install.sh gave them.
cameras=()
for path in "$wants"/yolo-edge-agent@?*.service "$unit_dir"/yolo-edge-agent@?*.service.d; do
	[[ -e $path ]] || continue
	name=${path##*/}
	cameras+=("${name%.d}")
done
mapfile -t cameras < <(((${#cameras[@]})) && printf '%s\n' "${cameras[@]}" | LC_ALL=C sort -u)

if [[ -z $root ]]; then
	for service in "$SERVICE" "${cameras[@]}"; do
		if systemctl cat "$service" >/dev/null 2>&1; then
			note "stopping and disabling $service"
			systemctl disable --now "$service"
		fi
	done
elif [[ -f $unit ]] && command -v systemctl >/dev/null; then
	systemctl --root="$root" --quiet disable "$SERVICE" 2>/dev/null
fi
rm -f "$unit" "$unit_dir/$TEMPLATE" "$wants/$SERVICE"
for service in "${cameras[@]}"; do
	# The CPU share is install.sh's own file; a drop-in of the user's stays unless --purge.
	rm -f "$wants/$service" "$unit_dir/$service.d/50-cpus.conf"
	rmdir "$unit_dir/$service.d" 2>/dev/null || true
done
rm -rf "$root/opt/yolo-edge"
note "removed the units and /opt/yolo-edge"

if ((purge)); then
	rm -rf "$root/etc/yolo-edge" "$root/var/lib/yolo-edge" "$unit.d"
	for service in "${cameras[@]}"; do
		rm -rf "${unit_dir:?}/$service.d"
	done
	note "removed /etc/yolo-edge, /var/lib/yolo-edge and the units' drop-ins"
	if [[ -z $root ]] && getent passwd "$USER_NAME" >/dev/null; then
		userdel "$USER_NAME"
		note "removed the user $USER_NAME"
	fi
else
	note "kept /etc/yolo-edge (agent.toml, broker password) and /var/lib/yolo-edge (bundles, undelivered events); --purge removes them"
fi

if [[ -z $root ]]; then
	systemctl daemon-reload
	systemctl reset-failed "$SERVICE" "${cameras[@]}" 2>/dev/null || true
fi
