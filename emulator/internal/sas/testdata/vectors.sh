#!/usr/bin/env bash
# Recipe of vectors.tsv: device keys and SAS signatures computed with the
# openssl command line, outside this code base, so that the emulator's sas
# package (and the SDK's domain package) are checked against something
# neither of them produced. Run from this directory: bash vectors.sh > vectors.tsv
#
# Lines (tab-separated):
#   derive  <group key base64>  <registration id>  <device key base64>
#   sign    <key base64>  <string to sign, "\n" written as \n>  <signature base64>
# The string to sign is "<sr as sent>\n<se>"; sr is the resource with every
# byte outside A-Z a-z 0-9 - _ . ~ percent-encoded (upper-case hex), as
# encodeURIComponent does for these resources.
set -euo pipefail

hmac() { # key-base64 message -> base64 HMAC-SHA256
	printf '%b' "$2" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(printf '%s' "$1" | base64 -d | xxd -p -c 256)" -binary | base64
}

group1="dGhpcyBpcyBhIGdyb3VwIGtleSBvZiAzMiBieXRlcyE="
group2="c2Vjb25kYXJ5LWdyb3VwLWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OQ=="
for id in Device-01 device-01 My.Sensor-A sensor.temp-3 ABC x 'Thermo-Stat.42' 'a.b.c-D-E-F'; do
	for g in "$group1" "$group2"; do
		printf 'derive\t%s\t%s\t%s\n' "$g" "$id" "$(hmac "$g" "$id")"
	done
done

dev="$(hmac "$group1" My.Sensor-A)"
for sr in \
	'MyHub.azure-devices.net%2Fdevices%2FMy.Sensor-A' \
	'localhost%2Fdevices%2FDevice-01' \
	'0ne00ABCDEF%2Fregistrations%2Fsensor.temp-3' \
	'localhost%2fdevices%2fDevice-01' \
	'localhost/devices/Device-01'; do
	for se in 1700000000 4102444800; do
		printf 'sign\t%s\t%s\\n%s\t%s\n' "$dev" "$sr" "$se" "$(hmac "$dev" "$sr\n$se")"
	done
done
