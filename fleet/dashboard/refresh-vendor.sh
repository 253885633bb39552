#!/bin/sh
# Refresh the dashboard's vendored libraries from the npm registry at the pinned versions (`make vendor`).
# Each built file is copied with its licence; nothing else of the packages is kept.
set -eu
MQTT_VERSION=5.16.0
UPLOT_VERSION=1.6.32
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d /tmp/yolo-edge-vendor.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
npm pack --silent "mqtt@$MQTT_VERSION" "uplot@$UPLOT_VERSION" >/dev/null
mkdir mqtt uplot
tar -xzf "mqtt-$MQTT_VERSION.tgz" -C mqtt
tar -xzf "uplot-$UPLOT_VERSION.tgz" -C uplot
out="$here/vendor"
mkdir -p "$out"
cp mqtt/package/dist/mqtt.esm.js "$out/mqtt.esm.js"
cp mqtt/package/LICENSE.md "$out/mqtt.LICENSE.md"
cp uplot/package/dist/uPlot.esm.js "$out/uPlot.esm.js"
cp uplot/package/dist/uPlot.min.css "$out/uPlot.min.css"
cp uplot/package/LICENSE "$out/uPlot.LICENSE"
printf 'mqtt %s\nuplot %s\n' "$MQTT_VERSION" "$UPLOT_VERSION" >"$out/VERSIONS"
echo "vendored mqtt $MQTT_VERSION and uplot $UPLOT_VERSION into $out"
