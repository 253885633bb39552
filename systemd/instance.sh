# shellcheck shell=bash
# One camera of several on one Pi, for install.sh --instance NAME (sourced by it, which defines die).
#
# Each camera runs as yolo-edge-agent@NAME with its own config, /etc/yolo-edge/agent-NAME.toml, made
# here from the example: its bundle under its own state directory, and a device id of its own, so its
# topics, its broker login and its Home Assistant device are its own.
#
# The CPUs are split between cameras with CPUAffinity= rather than by writing [model] threads into each
# config: the agent's `threads = 0` already means "the CPUs I may run on", so a camera whose unit gets
# CPUs 2-3 runs two inference threads there, and onnxruntime's spinning threads, the camera decoder's
# and anything else it starts can never land on the other camera's cores. A third camera then moves
# the first two by rewriting drop-ins this script owns, never a config the user edited. CPUQuota= was
# not chosen: it caps time, not threads, so two agents of four threads each still fight over four
# cores, and a throttled thread holds up the others of its inference.

readonly CPUS_DROP_IN=50-cpus.conf

host_device_id() { # ROOT: the host name as the agent reduces it for a device id (config/sections.py)
	local root=$1 host=""
	if [[ -n $root && -s $root/etc/hostname ]]; then
		read -r host <"$root/etc/hostname" || true # the host the tree under --root is for
	else
		host=$(uname -n)
	fi
	host=$(printf '%s' "$host" | tr -c 'A-Za-z0-9_-' '-')
	printf '%s\n' "${host:-yolo-edge}"
}

instance_config() { # EXAMPLE NAME DEVICE_ID: the example config made camera NAME's, on stdout
	local example=$1 name=$2 device=$3 text line
	text=$(sed \
		-e "s|^path = \"/var/lib/yolo-edge/bundles/current\"\$|path = \"/var/lib/yolo-edge/$name/bundles/current\"|" \
		-e "s|^# device_id = .*|device_id = \"$device\"|" \
		-e "s|^# username = .*|# username = \"$device\"|" \
		-e "s|^# password_file = \"/etc/yolo-edge/mqtt-password\"\$|# password_file = \"/etc/yolo-edge/mqtt-password-$name\"|" \
		-e "s|^# state_dir = .*|# state_dir = \"/var/lib/yolo-edge/$name\"|" \
		-e "s|^# onnxruntime intra-op threads; 0 = all cores.\$|# onnxruntime intra-op threads; 0 = every CPU of this camera's share (CPUAffinity= in\n# /etc/systemd/system/yolo-edge-agent@$name.service.d/$CPUS_DROP_IN, written by install.sh).|" \
		"$example")
	for line in "path = \"/var/lib/yolo-edge/$name/bundles/current\"" "device_id = \"$device\"" \
		"# password_file = \"/etc/yolo-edge/mqtt-password-$name\"" "# state_dir = \"/var/lib/yolo-edge/$name\""; do
		grep -qxF -- "$line" <<<"$text" || die "$example does not have the lines install.sh rewrites for a camera (no '$line' came out); use the install.sh of the same checkout"
	done
	printf '# Camera %s: yolo-edge-agent@%s runs with this file (written by install.sh --instance %s).\n' \
		"$name" "$name" "$name"
	printf '%s\n' "$text"
}

write_if_changed() { # TO: stdin to TO (mode 0644) only when it differs; prints "changed" or "same"
	local to=$1
	cat >"$to.new.$$"
	if [[ -f $to ]] && cmp -s "$to.new.$$" "$to"; then
		rm -f "$to.new.$$"
		echo same
		return
	fi
	chmod 0644 "$to.new.$$"
	mv -f "$to.new.$$" "$to"
	echo changed
}

split_cpus() { # UNIT_DIR NAME: each camera's CPUAffinity= drop-in; prints "NAME CPUS changed|same" per camera
	local unit_dir=$1 name=$2 cpus dir other range first last change i=0 names=()
	cpus=$(getconf _NPROCESSORS_ONLN)
	# The cameras: those this script gave a share before, and the new one; by name, so a rerun is stable.
	mapfile -t names < <(
		{
			printf '%s\n' "$name"
			for dir in "$unit_dir"/yolo-edge-agent@*.service.d; do
				[[ -f $dir/$CPUS_DROP_IN ]] || continue
				dir=${dir##*/yolo-edge-agent@}
				printf '%s\n' "${dir%.service.d}"
			done
		} | LC_ALL=C sort -u
	)
	for other in "${names[@]}"; do
		if ((${#names[@]} <= cpus)); then
			first=$((i * cpus / ${#names[@]}))
			last=$(((i + 1) * cpus / ${#names[@]} - 1))
		else # more cameras than CPUs: some share one
			first=$((i % cpus))
			last=$first
		fi
		range=$first
		((last == first)) || range=$first-$last
		dir=$unit_dir/yolo-edge-agent@$other.service.d
		install -d -m 0755 "$dir"
		change=$(
			write_if_changed "$dir/$CPUS_DROP_IN" <<EOF
# Written by systemd/install.sh --instance: ${#names[@]} camera(s) share this Pi's $cpus CPUs, and $other runs on
# CPUs $range, so no two agents run inference on the same core ([model] threads = 0 uses exactly these).
# install.sh rewrites this file whenever a camera is added. For another share, use a drop-in of your own
# (sudo systemctl edit yolo-edge-agent@$other) starting with an empty CPUAffinity= line, which clears this one.
[Service]
CPUAffinity=$range
EOF
		)
		printf '%s %s %s\n' "$other" "$range" "$change"
		i=$((i + 1))
	done
}
