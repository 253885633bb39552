#!/usr/bin/env bash
# Raspberry Pi check under emulation: does the agent install and run on the Pi's architecture?
#
#   benchmarks/pi/pi_check.sh                  # the check (what `make pi-check` runs)
#   benchmarks/pi/pi_check.sh prepare          # downloads and installs only, no emulation
#   benchmarks/pi/pi_check.sh probe 1.28.0 ... # import + run onnxruntime releases under each CPU
#
# 1. A Debian bookworm arm64 root (debootstrap --foreign, then the debs unpacked with dpkg -x: the
#    second stage would need binfmt_misc, which containers often lack). Its Python 3.11 runs under
#    qemu-aarch64-static -L ROOT, no binfmt_misc needed.
# 2. The agent's aarch64 wheels, resolved by pip from the project's own wheel metadata (so from
#    pyproject.toml's base dependencies), installed with pip --target into the root.
# 3. `yolo-edge-agent run --dry-run` on the fixture bundle (converted here on x86), under
#    -cpu cortex-a72 (Pi 4: no dot product) and cortex-a76 (Pi 5), FP32 and INT8, on two sources:
#    the generated MJPG video, and the same frames as PNG already scaled to the model's input
#    (identical model input on both sides; see sources.py). The detections must match the x86 run on
#    the same model input to the payload's rounding (TIGHT below); Pi 4 and Pi 5 must agree too.
#    For the video that input is the emulated agent's own decoding (decode_frames.py under qemu),
#    as the two OpenCV wheels decode it a level or two apart and INT8 amplifies that (reference.py);
#    the decoders' spread is measured, x86's own decoding of the video shown for information.
#    A run that crashes (SIGILL, SIGSEGV) or differs fails the check (exit 1).
#
# Timing under emulation says nothing about a Pi's speed; none is reported.
# Everything is written under $PI_CHECK_CACHE (default ~/.cache/yolo-edge-pi), never into the repo.
#
# Settings (environment):
#   PI_CHECK_CACHE        work and download directory
#   PI_CHECK_PYTHON       the x86 interpreter (default: the repo's .venv/bin/python; `make pi-check
#                         PY=...` passes PY); the x86 runs import this checkout's code whatever
#                         that interpreter has installed
#   PI_CHECK_CPUS         qemu CPU models (default "cortex-a72 cortex-a76")
#   PI_CHECK_PRECISIONS   default "fp32 int8"
#   PI_CHECK_SOURCES      default "video frames" (see benchmarks/pi/sources.py)
#   PI_CHECK_FRAMES       frames per run (default 20)
#   PI_CHECK_ONNXRUNTIME  onnxruntime version for the arm64 side (default: the newest pip resolves,
#                         as on a Pi)
#   PI_CHECK_EXACT_X86_INT8  always (default): the x86 INT8 reference uses onnxruntime's exact kernels
#                         whatever the host (see reference.py); auto: only on x86 without VNNI;
#                         never: the host's own INT8 kernel. The output says which and why.
#   PI_CHECK_CPUINFO      "pi" (default): the guest sees a Pi's /proc/cpuinfo; "host": the host's
#                         (reproduces the onnxruntime >= 1.28 crash under qemu 7.2, see write_cpuinfo)
#   PI_CHECK_QEMU         qemu-aarch64 binary (default qemu-aarch64-static from apt)
#   PI_CHECK_MIRROR       Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PI_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/yolo-edge-pi}
# The x86 side: this checkout's code (PYTHONPATH wins over an editable install of another
# checkout) under the interpreter of its venv, or of PI_CHECK_PYTHON.
PY=${PI_CHECK_PYTHON:-$REPO/.venv/bin/python}
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
CPUS=${PI_CHECK_CPUS:-cortex-a72 cortex-a76}
PRECISIONS=${PI_CHECK_PRECISIONS:-fp32 int8}
SOURCES=${PI_CHECK_SOURCES:-video frames}
FRAMES=${PI_CHECK_FRAMES:-20}
ORT_PIN=${PI_CHECK_ONNXRUNTIME:-}
EXACT_X86_INT8=${PI_CHECK_EXACT_X86_INT8:-always}
QEMU=${PI_CHECK_QEMU:-qemu-aarch64-static}
MIRROR=${PI_CHECK_MIRROR:-http://deb.debian.org/debian}
WEIGHTS=$REPO/tests/assets/shapes_yolo11n.pt

ROOT=$CACHE/root-bookworm-arm64
WHEELS=$CACHE/wheels
GUEST_PYTHON=$ROOT/usr/bin/python3.11
# Raspberry Pi OS bookworm has glibc 2.36; PyPI's aarch64 wheels are manylinux_2_28 or older.
PIP_TARGET_ARGS=(--platform manylinux_2_28_aarch64 --only-binary=:all: --python-version 3.11
	--implementation cp --abi cp311)
NICE=(nice -n 19)

log() { printf '== %s\n' "$*" >&2; }
die() {
	printf 'pi-check: %s\n' "$*" >&2
	exit 2
}

# The runs below change directory, so a relative PI_CHECK_PYTHON (`make pi-check` used to pass
# .venv/bin/python) must be made absolute here, against the directory the check was started from.
# Not through readlink -f: a venv's python is a symlink, and its target outside the venv has none
# of the venv's packages.
if [[ $PY != */* ]]; then
	PY=$(command -v "$PY") || die "PI_CHECK_PYTHON: no $PY on PATH (set it to an interpreter's path)"
fi
if ! [ -f "$PY" ] || ! [ -x "$PY" ]; then
	die "PI_CHECK_PYTHON: $PY is not an interpreter here (run 'make venv', or set it to one)"
fi
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")

declare -a TIMINGS=()
timed() { # NAME COMMAND...: run and remember how long it took
	local name=$1 start=$SECONDS
	shift
	"$@"
	TIMINGS+=("$(printf '%-44s %5d s' "$name" $((SECONDS - start)))")
}

need_tools() {
	local missing=()
	command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
	if [ -z "${PI_CHECK_QEMU:-}" ] && ! command -v qemu-aarch64-static >/dev/null; then
		missing+=(qemu-user-static)
	fi
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing with apt: ${missing[*]}"
		local sudo=()
		[ "$(id -u)" = 0 ] || sudo=(sudo)
		"${sudo[@]}" apt-get update -qq
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
	fi
	"$PY" -c 'import ultralytics, onnxruntime' 2>/dev/null ||
		die "$PY cannot import the converter's dependencies: run 'make venv' first (or set PI_CHECK_PYTHON)"
	[ "$(id -u)" = 0 ] || die "debootstrap needs root (run with sudo)"
	if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
		log "binfmt_misc has qemu-aarch64 registered (not needed: qemu is called directly with -L)"
	else
		log "binfmt_misc: no qemu-aarch64 entry here; not needed, qemu is called directly with -L"
	fi
}

build_root() {
	if [ -f "$ROOT/.complete" ]; then
		log "arm64 root: cached in $ROOT"
		return
	fi
	log "arm64 root: debootstrap bookworm (first stage) into $ROOT"
	rm -rf "$ROOT.tmp"
	mkdir -p "$CACHE"
	"${NICE[@]}" debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 \
		bookworm "$ROOT.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
		die "debootstrap failed; see $CACHE/debootstrap.log"
	# The second stage runs maintainer scripts inside the root, which needs binfmt_misc; unpacking
	# every downloaded package gives a root that is complete enough to run Python.
	local deb
	for deb in "$ROOT.tmp"/var/cache/apt/archives/*.deb; do
		"${NICE[@]}" dpkg -x "$deb" "$ROOT.tmp"
	done
	[ -x "$ROOT.tmp/usr/bin/python3.11" ] || die "the arm64 root has no python3.11"
	touch "$ROOT.tmp/.complete"
	mv "$ROOT.tmp" "$ROOT"
}

# qemu-user 7.2 (Debian bookworm) shows an aarch64 guest the host's x86 /proc/cpuinfo. The cpuinfo
# library inside onnxruntime 1.28 and later then finds no ARM core description and dereferences
# NULL while the module loads: `import onnxruntime` dies with SIGSEGV, on both CPU models. A Pi's
# kernel describes its cores; qemu's -L prefix serves ROOT/proc/cpuinfo in place of the host's,
# so the root gets what the Pi shows (Pi 4: BCM2711, Pi 5: BCM2712), one processor entry per
# host CPU, as the host's /sys/devices/system/cpu says. PI_CHECK_CPUINFO=host leaves the host's.
# qemu 8.2 and later emulate an ARM /proc/cpuinfo themselves (seen with 10.0) and ignore this file.
write_cpuinfo() {
	local cpu=$1 features variant part revision index
	rm -f "$ROOT/proc/cpuinfo"
	[ "${PI_CHECK_CPUINFO:-pi}" = host ] && return
	case "$cpu" in
	cortex-a72) features="fp asimd evtstrm crc32 cpuid" variant=0x0 part=0xd08 revision=3 ;;
	cortex-a76)
		features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
		variant=0x4 part=0xd0b revision=1
		;;
	*) return ;; # other models: the host's, as qemu gives it
	esac
	for ((index = 0; index < $(nproc --all); index++)); do
		printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$index" "$features"
		printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$revision"
	done >"$ROOT/proc/cpuinfo"
}

# Run Python inside the root under qemu: guest CPU, then python arguments. Paths that do not
# exist inside the root (the cache, the repo) are the host's, so they are passed as they are.
guest() {
	local cpu=$1 site=$2
	shift 2
	write_cpuinfo "$cpu"
	env -i PATH=/usr/bin:/bin HOME="$CACHE/home" LANG=C.UTF-8 PYTHONNOUSERSITE=1 PYTHONPATH="$site" \
		YOLO_EDGE_AGENT_STATE_DIR="$CACHE/state-arm64" \
		"${NICE[@]}" "$QEMU" -cpu "$cpu" -L "$ROOT" "$GUEST_PYTHON" "$@"
}

project_sources() { # every Python file of the packages the wheel holds, subpackages included
	find "$REPO/agent" "$REPO/converter" "$REPO/fleet" -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort |
		xargs cat
}

# The project's wheel, built from a copy of the sources so nothing is written into the repo.
build_project_wheel() {
	local source
	source=$(mktemp -d)
	rm -rf "$WHEELS/project"
	mkdir -p "$WHEELS/project"
	cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/agent" "$REPO/converter" "$REPO/fleet" "$source/"
	find "$source" -name __pycache__ -prune -exec rm -rf {} +
	"${NICE[@]}" "$PY" -m pip wheel --quiet --no-deps --no-build-isolation \
		--wheel-dir "$WHEELS/project" "$source" >/dev/null
	rm -rf "$source"
	PROJECT_WHEEL=$(echo "$WHEELS/project"/yolo_edge-*.whl)
	[ -f "$PROJECT_WHEEL" ] || die "building the project wheel failed"
}

# Download (cached in $WHEELS/deps) the aarch64 wheels of REQUIREMENTS... and install them with
# pip --target into SITE. The site is reinstalled only when the project's sources, the request or
# the downloaded wheels changed: a fresh site costs the first emulated run its .pyc compilation.
install_site() {
	local site=$1 stamp
	shift
	mkdir -p "$WHEELS/deps"
	"${NICE[@]}" "$PY" -m pip download --quiet --dest "$WHEELS/deps" "${PIP_TARGET_ARGS[@]}" "$@"
	rm -f "$WHEELS/deps"/yolo_edge-*.whl # pip copies the local project wheel; it is rebuilt every run
	stamp=$({
		printf '%s\n' "${@##*/}"
		ls "$WHEELS/deps"
		cat "$REPO/pyproject.toml"
		project_sources
	} | sha256sum | cut -c1-16)
	if [ -f "$site/.stamp" ] && [ "$(cat "$site/.stamp")" = "$stamp" ]; then
		return
	fi
	rm -rf "$site"
	"${NICE[@]}" "$PY" -m pip install --quiet --no-index --find-links "$WHEELS/deps" \
		--target "$site" "${PIP_TARGET_ARGS[@]}" "$@"
	echo "$stamp" >"$site/.stamp"
}

ort_requirement() { # onnxruntime==VERSION when a version is pinned, else nothing
	if [ -n "$1" ]; then printf 'onnxruntime==%s\n' "$1"; fi
}

site_versions() { # SITE: the versions pip installed there
	local dist
	for dist in onnxruntime numpy opencv_python_headless paho_mqtt; do
		# shellcheck disable=SC2012 # one dist-info per package in a fresh --target dir
		ls -d "$1/$dist"-*.dist-info 2>/dev/null | sed 's|.*/||; s|\.dist-info$||' | tr '\n' ' '
	done
}

# The fixture bundle and video, rebuilt when the weights, the agent or the converter change.
build_fixture() {
	local key
	key=$({
		cat "$WEIGHTS"
		project_sources
	} | sha256sum | cut -c1-16)
	FIXTURE=$CACHE/fixture/$key
	BUNDLE=$FIXTURE/bundle
	VIDEO=$FIXTURE/shapes-$FRAMES.avi
	if [ ! -f "$BUNDLE/manifest.json" ]; then
		log "fixture: dataset and bundle (x86 converter) into $FIXTURE"
		rm -rf "$CACHE/fixture"
		mkdir -p "$FIXTURE"
		(cd "$REPO" && "${NICE[@]}" "$PY" -m benchmarks.fixture.make_shapes --out "$FIXTURE/shapes") >/dev/null
		# Small calibration and validation sets: the check compares x86 with arm64 on one bundle,
		# whatever its accuracy. --force keeps a bundle whose INT8 misses the accuracy bar.
		local status=0
		(cd "$FIXTURE" && "${NICE[@]}" "$PY" -m converter.cli "$WEIGHTS" --out "$BUNDLE" \
			--calib "$FIXTURE/shapes/data.yaml" --calib-size 32 --val-size 32 --force) \
			>"$FIXTURE/convert.log" 2>&1 || status=$?
		[ -f "$BUNDLE/manifest.json" ] || die "conversion failed (exit $status); see $FIXTURE/convert.log"
	else
		log "fixture: bundle cached in $BUNDLE"
	fi
	FOLDER=$FIXTURE/scaled-frames-$FRAMES
	if [ ! -d "$FOLDER" ]; then
		(cd "$REPO" && "${NICE[@]}" "$PY" -m benchmarks.pi.sources --bundle "$BUNDLE" \
			--frames "$FRAMES" --video "$VIDEO" --folder "$FOLDER")
	fi
}

source_path() { # video | frames
	case "$1" in
	video) echo "$VIDEO" ;;
	frames) echo "$FOLDER" ;;
	esac
}

agent_args() { # SOURCE_PATH PRECISION: the `run` arguments every run shares
	printf '%s\n' run --source "$1" --model "$BUNDLE" --precision "$2" --dry-run --max-frames "$FRAMES"
}

# How far the emulated detections may be from the reference (see compare_detections.py): the
# payload's rounding (4 decimals), as every comparison gives the model the same input on both sides.
#  - frames: both sides read the same pre-scaled PNGs; measured: identical payloads for FP32 and
#    INT8, on both CPUs.
#  - video: the x86 reference runs on the frames the emulated agent's own OpenCV decoded and
#    resized (decode_frames.py), not on x86's decoding of the video: the two wheels' pixels differ
#    by a level or two, and INT8 turns that into confidence differences no fixed tolerance bounds
#    on every host (0.039 on one, 0.0518 on another against 0.05). How far the decoders are apart
#    is measured and must be that of the same image (reference.py spread); what x86's own decoding
#    gives is shown under "for information", with the LOOSE tolerances that held before.
TIGHT=(--box-tol-px 0.1 --conf-tol 0.001)
LOOSE=(--box-tol-px 6 --conf-tol 0.05)

# The x86 reference of PRECISION: which agent (for INT8, by default, the agent with onnxruntime's
# exact kernels, on any x86 CPU) and why, from reference.py; the why goes into the output.
x86_run() { # NAME SOURCE_PATH PRECISION: the x86 agent's run into $RUNS/NAME-x86-PRECISION.jsonl
	local name=$1 path=$2 precision=$3 args chosen out="$RUNS/$1-x86-$3"
	mapfile -t chosen < <(cd "$REPO" && "$PY" -m benchmarks.pi.reference agent "$precision" --setting "$EXACT_X86_INT8")
	[ ${#chosen[@]} -eq 2 ] || die "no x86 reference for $precision (PI_CHECK_EXACT_X86_INT8=$EXACT_X86_INT8)"
	echo "x86 reference, ${chosen[1]}" >>"$RUNS/notes"
	mapfile -t args < <(agent_args "$path" "$precision")
	(cd "$REPO" && YOLO_EDGE_AGENT_STATE_DIR="$CACHE/state-x86" "${NICE[@]}" "$PY" -m "${chosen[0]}" "${args[@]}") \
		>"$out.jsonl" 2>"$out.log" || die "the x86 run ($name, $precision) failed; see $out.log"
}

run_x86() { # every source as x86 reads it; the video also decoded as the agent does, for the spread
	local source precision
	for source in $SOURCES; do
		for precision in $PRECISIONS; do
			x86_run "$source" "$(source_path "$source")" "$precision"
		done
	done
	if [[ " $SOURCES " == *" video "* ]]; then
		(cd "$REPO" && "${NICE[@]}" "$PY" benchmarks/pi/decode_frames.py "$VIDEO" "$BUNDLE" "$RUNS/video-decoded-x86" \
			--frames "$FRAMES") >"$RUNS/video-decoded-x86.log" 2>&1 ||
			die "decoding the video on x86 failed; see $RUNS/video-decoded-x86.log"
	fi
}

# The video as the emulated CPU's OpenCV decodes and letterboxes it, how far that is from x86's
# decoding, and the x86 reference runs on it.
decode_emulated() { # CPU
	local cpu=$1 status=0 precision folder="$RUNS/video-decoded-$1"
	guest "$cpu" "$SITE" "$REPO/benchmarks/pi/decode_frames.py" "$VIDEO" "$BUNDLE" "$folder" --frames "$FRAMES" \
		>"$folder.log" 2>&1 || status=$?
	if [ "$status" -ne 0 ]; then
		echo "video decoding $cpu: FAILED: exit code $status; see $folder.log" >>"$RUNS/summary"
		return
	fi
	(cd "$REPO" && "$PY" -m benchmarks.pi.reference spread "$folder" "$RUNS/video-decoded-x86" \
		--label "video decoding $cpu vs x86") >>"$RUNS/summary" || true
	for precision in $PRECISIONS; do
		x86_run "video-decoded-$cpu" "$folder" "$precision"
	done
}

compare() { # LABEL REFERENCE CANDIDATE OPTION...: one verdict line (and details) into the summary
	local label=$1 reference=$2 candidate=$3
	shift 3
	(cd "$REPO" && "$PY" -m benchmarks.pi.compare_detections --label "$label" "$@" \
		"$reference" "$candidate") >>"${RUNS_SUMMARY:-$RUNS/summary}" || true
}

# One emulated run, compared with the x86 run on the same model input.
run_emulated() {
	local source=$1 cpu=$2 precision=$3 args status=0 reference
	local name="$source $precision $cpu vs x86" out="$RUNS/$1-$2-$3"
	mapfile -t args < <(agent_args "$(source_path "$source")" "$precision")
	guest "$cpu" "$SITE" "$SITE/bin/yolo-edge-agent" "${args[@]}" >"$out.jsonl" 2>"$out.log" || status=$?
	if [ "$status" -ne 0 ]; then
		local why=""
		[ "$status" -eq 139 ] && why=" (SIGSEGV)"
		[ "$status" -eq 132 ] && why=" (SIGILL)"
		echo "$name: FAILED: exit code $status$why; see $out.log" >>"$RUNS/summary"
		return
	fi
	reference="$RUNS/$source-x86-$precision.jsonl"
	if [ "$source" = video ]; then
		RUNS_SUMMARY="$RUNS/info" compare "$source $precision $cpu vs x86 decoding the video itself" \
			"$reference" "$out.jsonl" "${LOOSE[@]}" --info
		reference="$RUNS/video-decoded-$cpu-x86-$precision.jsonl"
		name="$source $precision $cpu vs x86 on $cpu's decoding"
		if [ ! -s "$reference" ]; then
			echo "$name: FAILED: no x86 reference (the video decoding under $cpu failed)" >>"$RUNS/summary"
			return
		fi
	fi
	compare "$name" "$reference" "$out.jsonl" "${TIGHT[@]}"
}

# Downloads and installs only, no emulation: the arm64 root and the agent's wheels in it.
prepare() {
	timed "tools" need_tools
	timed "arm64 root (debootstrap)" build_root
	timed "project wheel" build_project_wheel
	SITE=$ROOT/opt/yolo-edge/site
	local requirements
	mapfile -t requirements < <(ort_requirement "$ORT_PIN")
	log "arm64 wheels: pip download + install --target $SITE"
	timed "arm64 wheels (download, install)" install_site "$SITE" "$PROJECT_WHEEL" "${requirements[@]}"
	log "arm64 site: $(site_versions "$SITE")"
}

check() {
	local total_start=$SECONDS source cpu precision first
	prepare
	timed "fixture (dataset, bundle, frames)" build_fixture
	RUNS=$CACHE/runs
	rm -rf "$RUNS"
	mkdir -p "$RUNS" "$CACHE/home"
	log "x86 reference runs ($SOURCES; $PRECISIONS)"
	timed "x86 runs" run_x86
	log "emulated: $(guest cortex-a72 "$SITE" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')"
	if [[ " $SOURCES " == *" video "* ]]; then
		for cpu in $CPUS; do
			log "emulated video decoding, -cpu $cpu, and the x86 reference runs on it"
			timed "video decoding $cpu, x86 runs on it" decode_emulated "$cpu"
		done
	fi
	for source in $SOURCES; do
		for cpu in $CPUS; do
			for precision in $PRECISIONS; do
				log "emulated run: $source, -cpu $cpu, $precision"
				timed "emulated run $source $cpu $precision" run_emulated "$source" "$cpu" "$precision"
			done
		done
	done
	# Pi 4 against Pi 5: same wheels, different kernels (the A76 has dot product and FP16).
	first=${CPUS%% *}
	for source in $SOURCES; do
		for cpu in $CPUS; do
			[ "$cpu" = "$first" ] && continue
			for precision in $PRECISIONS; do
				if [ -s "$RUNS/$source-$first-$precision.jsonl" ] && [ -s "$RUNS/$source-$cpu-$precision.jsonl" ]; then
					compare "$source $precision $cpu vs $first" "$RUNS/$source-$first-$precision.jsonl" \
						"$RUNS/$source-$cpu-$precision.jsonl" "${TIGHT[@]}"
				fi
			done
		done
	done
	echo
	echo "Raspberry Pi check under emulation ($("$QEMU" --version | head -1))"
	echo "x86:     onnxruntime $("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)')"
	echo "arm64:   $(site_versions "$SITE")"
	echo "sources: video = $VIDEO (MJPG); frames = the same $FRAMES frames as model-sized PNG, $FOLDER"
	echo "bundle:  $BUNDLE; outputs in $RUNS"
	cat "$RUNS/summary"
	if [ -f "$RUNS/notes" ]; then sort -u "$RUNS/notes"; fi
	if [ -f "$RUNS/info" ]; then
		echo
		echo "for information, not part of the verdict: the video as x86 decodes it (tolerances ${LOOSE[*]}):"
		cat "$RUNS/info"
	fi
	echo
	echo "durations (emulation is no measure of a Pi's speed):"
	printf '  %s\n' "${TIMINGS[@]}"
	printf '  %-44s %5d s\n' "total" $((SECONDS - total_start))
	if grep -E -q '^[^ ].*: (DIFFER|FAILED)' "$RUNS/summary"; then
		echo "pi-check: FAILED"
		return 1
	fi
	echo "pi-check: OK"
}

probe_verdict() { # STATUS LOG: one line
	case "$1" in
	0) echo "ok: $(grep -c 'output (' "$2") models ran; $(grep -o 'max score.*' "$2" | tr '\n' ' ')" ;;
	132) echo "SIGILL (exit 132) at import" ;;
	139) echo "SIGSEGV (exit 139)$(grep -q '_pybind_state.py' "$2" && echo ' at import')" ;;
	*) echo "exit $1: $(grep -v 'pi_check.sh: line' "$2" | tail -1)" ;;
	esac
}

# probe VERSION...: which onnxruntime releases import and run the fixture models under each CPU.
probe() {
	[ $# -gt 0 ] || die "usage: $0 probe ONNXRUNTIME_VERSION..."
	need_tools
	build_root
	build_fixture
	local version cpu status site
	for version in "$@"; do
		site=$ROOT/opt/yolo-edge/probe-ort-$version
		install_site "$site" "onnxruntime==$version"
		for cpu in $CPUS; do
			status=0
			guest "$cpu" "$site" -X faulthandler "$REPO/benchmarks/pi/ort_probe.py" \
				"$BUNDLE/model.fp32.onnx" "$BUNDLE/model.int8.onnx" >"$CACHE/probe-$version-$cpu.log" 2>&1 || status=$?
			printf 'onnxruntime %-8s -cpu %-11s %s\n' "$version" "$cpu" "$(probe_verdict "$status" "$CACHE/probe-$version-$cpu.log")"
		done
	done
}

case "${1:-check}" in
check) check ;;
prepare) prepare ;;
probe)
	shift
	probe "$@"
	;;
*) die "usage: $0 [check | prepare | probe ONNXRUNTIME_VERSION...]" ;;
esac
