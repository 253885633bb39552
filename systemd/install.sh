#!/usr/bin/env bash
# Install or upgrade yolo-edge-agent as a systemd service on Raspberry Pi OS: `sudo systemd/install.sh`,
# or one service per camera: `sudo systemd/install.sh --instance NAME` for each.
#
# Running it again upgrades in place: the venv is updated, the units replaced when they changed, and
# /etc/yolo-edge/agent*.toml, the broker password files and installed bundles are left as they are.
set -euo pipefail

# Whatever the caller's umask, the venv and unit must be readable by the service user.
umask 022

readonly SERVICE=yolo-edge-agent.service
readonly TEMPLATE=yolo-edge-agent@.service
readonly USER_NAME=yolo-edge

usage() {
	cat <<'EOF'
Usage: sudo install.sh [options]

Installs the agent alone (no converter dependencies) in a venv at /opt/yolo-edge/venv, the units
yolo-edge-agent.service and yolo-edge-agent@.service, an example /etc/yolo-edge/agent.toml (never
overwriting one that exists) and the system user yolo-edge; then enables and starts the service.

Options:
  --instance NAME         one camera of several: yolo-edge-agent@NAME with its own config
                          /etc/yolo-edge/agent-NAME.toml (device id HOSTNAME-NAME), state directory
                          /var/lib/yolo-edge/NAME and share of the CPUs; --bundle and
                          --mqtt-password-stdin then apply to this camera (NAME: letters, digits, _ -)
  --source DIR            the yolo-edge checkout to install (default: the directory above this script)
  --bundle DIR            copy this bundle to /var/lib/yolo-edge/bundles/ and point `current` at it
  --mqtt-password-stdin   read the broker password from stdin into /etc/yolo-edge/mqtt-password
                          (mode 0640, root:yolo-edge), so it never appears in a command line
  --python PATH           Python 3.11+ that makes the venv (default: python3)
  --no-start              enable the service but do not start or restart it
  --skip-pip              make the venv but install nothing into it (tests)
  --root DIR              install under DIR instead of / (tests): no root or systemd needed,
                          no user created, ownership left alone, nothing started
  -h, --help              this text

Environment: YOLO_EDGE_PIP_ARGS, extra arguments for pip (e.g. "--index-url URL").
EOF
}

die() {
	echo "install.sh: $*" >&2
	exit 1
}

note() {
	echo "==> $*"
}

command_line="$0 $*"
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(dirname "$script_dir")
root=""
bundle=""
python=python3
start=1
pip=1
read_password=0
instance=""
instance_given=0

while (($#)); do
	case $1 in
	--source) source_dir=${2:?--source needs a directory}; shift 2 ;;
	--bundle) bundle=${2:?--bundle needs a directory}; shift 2 ;;
	--python) python=${2:?--python needs a path}; shift 2 ;;
	--root) root=${2:?--root needs a directory}; shift 2 ;;
	--instance) instance=${2?--instance needs a camera name}; instance_given=1; shift 2 ;;
	--mqtt-password-stdin) read_password=1; shift ;;
	--no-start) start=0; shift ;;
	--skip-pip) pip=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown option '$1' (see --help)" ;;
	esac
done

# A name that is part of a unit name, a file name, a topic and a device id: nothing that needs escaping.
((!instance_given)) || [[ $instance =~ ^[A-Za-z0-9_-]{1,32}$ ]] ||
	die "--instance '$instance' is not a camera name: use 1 to 32 letters, digits, _ and - (e.g. --instance front)"
if [[ -n $instance ]]; then
	# shellcheck source=instance.sh source-path=SCRIPTDIR
	source "$script_dir/instance.sh"
fi

if [[ -z $root ]]; then
	[[ $(id -u) -eq 0 ]] || die "must run as root: sudo $command_line"
	[[ -d /run/systemd/system ]] || die "systemd is not running on this machine (no /run/systemd/system); the agent needs it as its service manager"
else
	[[ -d $root ]] || die "--root $root is not a directory"
	root=$(cd "$root" && pwd)
	root=${root%/}
fi

[[ -f $source_dir/pyproject.toml && -d $source_dir/agent ]] || die "$source_dir is not a yolo-edge checkout (no pyproject.toml and agent/); use --source DIR"
source_dir=$(cd "$source_dir" && pwd)
unit_source=$source_dir/systemd/$SERVICE
example_source=$source_dir/systemd/agent.example.toml
[[ -f $unit_source && -f $source_dir/systemd/$TEMPLATE && -f $example_source ]] ||
	die "$source_dir/systemd lacks $SERVICE, $TEMPLATE or agent.example.toml"

command -v "$python" >/dev/null || die "$python not found; install Python 3.11+ (sudo apt install python3) or pass --python PATH"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
	die "$python is $("$python" -c 'import platform; print(platform.python_version())'); the agent needs Python 3.11+ (Raspberry Pi OS 12 bookworm or newer)"
if ((pip)); then
	"$python" -c 'import ensurepip, venv' 2>/dev/null || die "$python cannot make a venv with pip: sudo apt install python3-venv"
fi
if [[ -n $bundle ]]; then
	[[ -f $bundle/manifest.json ]] || die "--bundle $bundle is not a bundle directory (no manifest.json); make one with yolo-edge-convert"
	bundle=$(cd "$bundle" && pwd -P) # through a `current` link, copy (and name) the bundle it points at
fi
password=""
if ((read_password)); then
	if [[ -t 0 ]]; then
		IFS= read -rs -p "broker password: " password || true
		echo
	else
		IFS= read -r password || true
	fi
	password=${password%$'\r'}
	[[ -n $password ]] || die "--mqtt-password-stdin: the password is empty"
fi

prefix=$root/opt/yolo-edge
venv=$prefix/venv
etc=$root/etc/yolo-edge
state=$root/var/lib/yolo-edge
unit_dir=$root/etc/systemd/system
# What this run sets up: the single agent, or one camera's (its unit, config, state and password).
if [[ -n $instance ]]; then
	unit=yolo-edge-agent@$instance
	config_name=agent-$instance.toml
	state=$state/$instance
	password_name=mqtt-password-$instance
else
	unit=yolo-edge-agent
	config_name=agent.toml
	password_name=mqtt-password
fi
config=$etc/$config_name

# Ownership only means something on the real system; under --root the files stay the caller's.
own() {
	[[ -n $root ]] || chown "$@"
}

# Copy $1 to $2 with mode $3 only when the content differs, so a rerun leaves the file (and its
# mtime) alone. Prints "changed" or "same".
install_if_changed() {
	local from=$1 to=$2 mode=$3
	if [[ -f $to ]] && cmp -s "$from" "$to"; then
		chmod "$mode" "$to"
		echo same
		return
	fi
	install -m "$mode" "$from" "$to.new.$$"
	mv -f "$to.new.$$" "$to"
	echo changed
}

# --- the system user --------------------------------------------------------------------------
if [[ -z $root ]]; then
	if ! getent passwd "$USER_NAME" >/dev/null; then
		note "creating the system user $USER_NAME"
		useradd --system --user-group --home-dir /nonexistent --no-create-home \
			--shell /usr/sbin/nologin --comment "yolo-edge agent" "$USER_NAME"
	fi
	# The unit adds the video group itself; membership also lets `sudo -u yolo-edge
	# yolo-edge-agent check` open the camera like the service does.
	if getent group video >/dev/null && ! id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx video; then
		usermod -aG video "$USER_NAME"
	fi
else
	note "--root: not creating the system user $USER_NAME"
fi

# --- the venv ---------------------------------------------------------------------------------
install -d -m 0755 "$prefix"
python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
if [[ -x $venv/bin/python ]] && [[ $(python_version "$venv/bin/python" 2>/dev/null || true) != "$(python_version "$python")" ]]; then
	note "the system Python changed version: making the venv again"
	rm -rf "$venv"
fi
# --system-site-packages: Picamera2 and libcamera come from apt (python3-picamera2), not from pip.
venv_args=(--system-site-packages)
((pip)) || venv_args+=(--without-pip)
if [[ -x $venv/bin/python ]]; then
	note "upgrading the venv $venv"
	"$python" -m venv "${venv_args[@]}" --upgrade "$venv"
else
	note "making the venv $venv"
	"$python" -m venv "${venv_args[@]}" "$venv"
fi
if ((pip)); then
	# pip builds in the source tree; a copy keeps root-owned build files out of the user's checkout.
	build=$(mktemp -d)
	trap 'rm -rf "$build"' EXIT
	tar -C "$source_dir" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
		--exclude=__pycache__ --exclude=.pytest_cache --exclude=./demo-out -cf - . |
		(mkdir "$build/src" && tar -C "$build/src" -xf -)
	constraints=$build/constraints.txt
	: >"$constraints"
	if system_numpy=$("$python" -s -c 'import numpy; print(numpy.__version__)' 2>/dev/null); then
		# Picamera2's compiled helpers from apt (simplejpeg and others) are built against apt's numpy.
		# A newer numpy in the venv would shadow it and break them (Raspberry Pi OS 12 has 1.24, and
		# recent opencv-python-headless wants 2.x), so pip must keep apt's and pick an OpenCV for it.
		echo "numpy==$system_numpy" >"$constraints"
		note "keeping the system's numpy $system_numpy for Picamera2"
	fi
	note "installing the agent into the venv (onnxruntime, numpy, opencv-python-headless, paho-mqtt)"
	# The base install is the agent alone: no [convert] extra, so no torch or ultralytics.
	# shellcheck disable=SC2086 # YOLO_EDGE_PIP_ARGS is a list of arguments on purpose
	"$venv/bin/python" -m pip install --disable-pip-version-check --no-input --upgrade \
		--constraint "$constraints" ${YOLO_EDGE_PIP_ARGS:-} "$build/src" ||
		die "pip could not install the agent (see above); is the package index reachable?"
fi

# --- files ------------------------------------------------------------------------------------
install -d -m 0755 "$unit_dir" "$etc"
# Both units on every run, so an upgrade keeps a camera's template in step with the venv.
unit_changed=$(install_if_changed "$unit_source" "$unit_dir/$SERVICE" 0644)
template_changed=$(install_if_changed "$source_dir/systemd/$TEMPLATE" "$unit_dir/$TEMPLATE" 0644)
# The example of this version, to compare with an agent.toml that an upgrade keeps.
install_if_changed "$example_source" "$prefix/agent.example.toml" 0644 >/dev/null
if [[ -f $source_dir/README.md ]]; then
	install_if_changed "$source_dir/README.md" "$prefix/README.md" 0644 >/dev/null
fi
# The README links its reference pages; without them its links are dead on the Pi.
if [[ -d $source_dir/docs ]]; then
	install -d -m 0755 "$prefix/docs"
	for page in "$source_dir"/docs/*.md; do
		install_if_changed "$page" "$prefix/docs/${page##*/}" 0644 >/dev/null
	done
fi

config_note="kept $config (this version's example: $prefix/agent.example.toml)"
if [[ ! -e $config && -n $instance ]]; then
	device_id=$(host_device_id "$root")-$instance
	instance_config "$example_source" "$instance" "$device_id" >"$config.new.$$"
	chmod 0644 "$config.new.$$"
	mv -f "$config.new.$$" "$config"
	config_note="wrote $config from the example (device_id \"$device_id\"): set [source] uri and [mqtt] host"
elif [[ ! -e $config ]]; then
	install -m 0644 "$example_source" "$config"
	config_note="wrote $config from the example: set [source] uri and [mqtt] host"
fi

password_file=$etc/$password_name
if [[ -n $password ]]; then
	if [[ -f $password_file ]] && [[ $(cat "$password_file") == "$password" ]]; then
		note "the broker password in $password_file is unchanged"
	else
		# Written with umask 077 and renamed, so it is never readable by anyone else, not even briefly.
		(umask 077 && printf '%s\n' "$password" >"$password_file.new.$$")
		own "root:$USER_NAME" "$password_file.new.$$"
		chmod 0640 "$password_file.new.$$"
		mv -f "$password_file.new.$$" "$password_file"
		note "wrote the broker password to $password_file (0640 root:$USER_NAME)"
	fi
fi

# --- state: bundles and the outbox ------------------------------------------------------------
install -d -m 0750 "$root/var/lib/yolo-edge" "$state" "$state/bundles"
own "$USER_NAME:$USER_NAME" "$root/var/lib/yolo-edge" "$state" "$state/bundles"
bundle_changed=0
if [[ -n $bundle ]]; then
	# The manifest holds the sha256 of every model file, so its hash names this exact bundle: the
	# same bundle installs once, a new one lands beside the old ones.
	digest=$(sha256sum "$bundle/manifest.json" | cut -c1-12)
	name=$(basename "$bundle")-$digest
	if [[ -d $state/bundles/$name ]]; then
		note "bundle $name is already installed"
	else
		note "installing bundle $name"
		staging=$state/bundles/.$name.partial
		rm -rf "$staging"
		mkdir "$staging"
		cp -R "$bundle/." "$staging"
		chmod -R u=rwX,g=rX,o= "$staging"
		own -R "$USER_NAME:$USER_NAME" "$staging"
		mv "$staging" "$state/bundles/$name" # a crash never leaves half a bundle under its name
	fi
	if [[ $(readlink "$state/bundles/current" 2>/dev/null || true) != "$name" ]]; then
		ln -sfn "$name" "$state/bundles/.current.new"
		own -h "$USER_NAME:$USER_NAME" "$state/bundles/.current.new"
		mv -fT "$state/bundles/.current.new" "$state/bundles/current"
		note "bundles/current -> $name"
		bundle_changed=1
	fi
fi

# --- systemd ----------------------------------------------------------------------------------
read_toml() { # FILE SECTION KEY DEFAULT: one value of agent.toml, or DEFAULT when it is unset or unreadable
	"$python" - "$@" <<'EOF'
import sys, tomllib
path, section, key, default = sys.argv[1:]
try:
    with open(path, "rb") as f:
        print(tomllib.load(f).get(section, {}).get(key, default))
except (OSError, tomllib.TOMLDecodeError):
    print(default)
EOF
}

[[ $unit_changed == changed ]] && note "installed $unit_dir/$SERVICE"
[[ $template_changed == changed ]] && note "installed $unit_dir/$TEMPLATE"
moved=()
if [[ -n $instance ]]; then
	# Every camera's share of the CPUs, this one's included; the others' take effect at their next start.
	while read -r other cpus change; do
		[[ $other != "$instance" && $change == changed ]] && moved+=("yolo-edge-agent@$other (CPUs $cpus)")
	done < <(split_cpus "$unit_dir" "$instance")
	if [[ -e $unit_dir/multi-user.target.wants/$SERVICE ]]; then
		note "$SERVICE is enabled too and may run on every CPU: give its camera an instance and disable it (sudo systemctl disable --now yolo-edge-agent), or set [model] threads in /etc/yolo-edge/agent.toml"
	fi
fi
if [[ -n $root ]]; then
	# systemctl --root only writes the enable symlink; it works without a running systemd.
	if command -v systemctl >/dev/null; then
		systemctl --root="$root" --quiet enable "$unit.service" 2>/dev/null
	fi
	note "installed under $root; nothing started"
else
	systemctl daemon-reload
	systemctl --quiet enable "$unit.service"
	model_path=$(read_toml "$config" model path "")
	if ((start)) && [[ -n $model_path && -e $model_path ]]; then
		note "starting $unit (it waits for the model and the first frame, up to 2 minutes)"
		systemctl restart "$unit.service" ||
			die "$unit did not start; see: journalctl -u $unit -n 50 --no-pager"
	elif ((start)); then
		note "not starting: model.path '${model_path:-unset}' does not exist yet; pass --bundle DIR or set [model] path in $config, then: sudo systemctl start $unit"
	elif ((bundle_changed)) && systemctl is-active --quiet "$unit.service"; then
		note "the running agent keeps the previous bundle until: sudo systemctl restart $unit"
	fi
fi
for other in "${moved[@]}"; do
	note "$other: the new share of the CPUs applies from its next start: sudo systemctl restart ${other%% *}"
done

host=$(read_toml "$config" mqtt host localhost)
cat <<EOF

$unit is installed and enabled.
  $config_note
  check config, camera, model and broker as the service would:
    sudo -u $USER_NAME /opt/yolo-edge/venv/bin/yolo-edge-agent check --config /etc/yolo-edge/$config_name
  follow it:            journalctl -u $unit -f
  its state and fps:    systemctl status $unit
  what it publishes:    mosquitto_sub -h $host -t 'yolo-edge/#' -v
  a broker password:    sudo $0 ${instance:+--instance $instance }--mqtt-password-stdin --no-start (it asks), then
                        set username and password_file = "/etc/yolo-edge/$password_name" in [mqtt] of $config_name
EOF
if ((pip)) && ! "$venv/bin/python" -c 'import picamera2' 2>/dev/null; then
	echo "  a Pi CSI camera (source uri \"picamera2\") needs: sudo apt install python3-picamera2"
fi
