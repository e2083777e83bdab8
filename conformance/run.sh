#!/usr/bin/env bash
# Runs the conformance suite: the official Azure IoT Node SDK against cmd/iotc-emulator.
#
#   bash conformance/run.sh            (from the repository root or anywhere)
#
# It builds the emulator, starts it on the standard ports (127.0.0.1: 8883 MQTT/TLS, 443
# WebSockets for MQTT and AMQP, 5671 AMQP/TLS) with a throw-away certificate directory,
# waits until its info file exists and every port accepts connections, installs the pinned
# SDKs with `npm ci` when node_modules is missing or older than package-lock.json, runs
# `node --test` and stops the emulator.
# Every scenario runs over each transport (mqtt, mqttws, amqp, amqpws). The exit status is
# the test status.
#
# Optional environment:
#   IOTC_EMULATOR_BIN              a prebuilt iotc-emulator to run instead of building one
#   IOTC_CONFORMANCE_TRANSPORTS    comma-separated subset of mqtt,mqttws,amqp,amqpws (default
#                                  all); the emulator still opens every listener
#   IOTC_CONFORMANCE_FILES         space-separated test files to run, relative to conformance/
#                                  (default every file of test/)
#
# The SDK dials fixed ports (8883, 443, 5671) and has no port option, so the listeners are
# not configurable here.
#
# Environment handed to the tests:
#   IOTC_EMULATOR_INFO   path of the JSON file written by `iotc-emulator --info-file`
#   NODE_EXTRA_CA_CERTS  the emulator's CA PEM (info.caFile); node reads it at start-up, so
#                        the Azure SDK trusts the emulator exactly as a device trusts Azure.
#
# Needs: go, node >= 20 with npm, openssl (the X.509 scenario makes its certificates
# with the openssl CLI), and the ports 8883, 443 and 5671 free on 127.0.0.1 (443 needs
# root or CAP_NET_BIND_SERVICE).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/iotc-conformance.XXXXXX")
info="$work/info.json"
log="$work/emulator.log"
mqtt_addr=127.0.0.1:8883
ws_addr=127.0.0.1:443
amqp_addr=127.0.0.1:5671
emu_pid=""

stop_emulator() {
	if [[ -n "$emu_pid" ]] && kill -0 "$emu_pid" 2>/dev/null; then
		kill -TERM "$emu_pid" 2>/dev/null || true
		for _ in $(seq 1 100); do
			kill -0 "$emu_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$emu_pid" 2>/dev/null || true
		wait "$emu_pid" 2>/dev/null || true
	fi
	emu_pid=""
}

# Shows the emulator's log without the lines that print secrets (group key, API token).
show_log() {
	echo "---- emulator log (lines naming keys or tokens left out) ----" >&2
	grep -viE 'key|token|secret|password|signature' "$log" | tail -n 80 >&2 || true
	echo "---- end of emulator log ----" >&2
}

cleanup() {
	stop_emulator
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

emulator_bin="${IOTC_EMULATOR_BIN:-}"
if [[ -z "$emulator_bin" ]]; then
	echo "conformance: building cmd/iotc-emulator" >&2
	(cd "$root" && go build -o "$work/iotc-emulator" ./cmd/iotc-emulator)
	emulator_bin="$work/iotc-emulator"
fi

# A listener another program still holds on a fixed port (an emulator of an
# earlier run winding down) is waited for, up to 60 s, instead of failing at once.
for addr in "$mqtt_addr" "$ws_addr" "$amqp_addr"; do
	for _ in $(seq 60); do
		if ! (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
			break
		fi
		echo "conformance: $addr is in use; waiting for it to be free" >&2
		sleep 1
	done
done

echo "conformance: starting the emulator on $mqtt_addr (MQTT), $ws_addr (WebSockets), $amqp_addr (AMQP)" >&2
"$emulator_bin" \
	--mqtt-addr "$mqtt_addr" \
	--ws-addr "$ws_addr" \
	--amqp-addr "$amqp_addr" \
	--cert-dir "$work/certs" \
	--info-file "$info" \
	--event-hub logs \
	--consumer-group conformance \
	-v \
	>"$log" 2>&1 &
emu_pid=$!

# Wait (at most 60 s) for a complete info file and accepting MQTT, WebSocket and AMQP ports.
ready=""
for _ in $(seq 1 600); do
	if ! kill -0 "$emu_pid" 2>/dev/null; then
		echo "conformance: the emulator exited before it was ready" >&2
		show_log
		exit 1
	fi
	if [[ -s "$info" ]] && node -e '
		const i = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
		const addrs = ["mqttAddr", "webSocketAddr", "amqpAddr"];
		for (const f of ["idScope","groupKey","caFile","restUrl","apiToken","hubHost","provisioningHost", ...addrs])
			if (typeof i[f] !== "string" || !i[f]) process.exit(1);
		const probe = (a) => new Promise((ok, bad) => {
			const host = a.slice(0, a.lastIndexOf(":")).replace(/^\[|\]$/g, ""), port = +a.slice(a.lastIndexOf(":") + 1);
			const s = require("net").connect({ host, port }, () => { s.destroy(); ok(); });
			s.on("error", bad);
		});
		Promise.all(addrs.map((f) => probe(i[f]))).then(() => process.exit(0), () => process.exit(1));
	' "$info" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
if [[ -z "$ready" ]]; then
	echo "conformance: the emulator did not become ready within 60 s" >&2
	show_log
	exit 1
fi

cd "$here"
# npm records what it installed in node_modules/.package-lock.json: install
# again when package-lock.json is newer (a package was added or pinned
# anew since), not only when node_modules is missing.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
	echo "conformance: installing the pinned SDKs (npm ci)" >&2
	npm ci --no-audit --no-fund >&2
fi

ca_file=$(node -p 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).caFile' "$info")
echo "conformance: running node --test" >&2
status=0
if [[ -n "${IOTC_CONFORMANCE_FILES:-}" ]]; then
	# shellcheck disable=SC2086 # the list is split on spaces on purpose
	IOTC_EMULATOR_INFO="$info" NODE_EXTRA_CA_CERTS="$ca_file" node --test --test-force-exit --test-timeout=120000 $IOTC_CONFORMANCE_FILES || status=$?
else
	IOTC_EMULATOR_INFO="$info" NODE_EXTRA_CA_CERTS="$ca_file" npm test || status=$?
fi

stop_emulator
if [[ $status -ne 0 ]]; then
	show_log
fi
exit "$status"
