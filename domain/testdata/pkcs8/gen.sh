#!/bin/sh
# Recipe of the encrypted PKCS#8 test vectors (run from this directory with
# OpenSSL 3; `openssl version` of the stored files: see VERSION).
# Passphrase of every encrypted key: "correct horse".
set -eu
P='pass:correct horse'
openssl version > VERSION
# A CA and a device certificate (CN pkcs8-device) for the connect test.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
  -subj /CN=iotc-go-pkcs8-test-ca -days 36500 -addext basicConstraints=critical,CA:true \
  -addext keyUsage=critical,keyCertSign,cRLSign -out ca.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec-plain.key
openssl req -new -key ec-plain.key -subj /CN=pkcs8-device -out device.csr
openssl x509 -req -in device.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 36500 \
  -extfile /dev/stdin -out ec-cert.pem <<X
basicConstraints=CA:false
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
X
rm -f device.csr ca.srl
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa-plain.key
openssl req -x509 -key rsa-plain.key -subj /CN=pkcs8-rsa -days 36500 -out rsa-cert.pem
# OpenSSL 3 defaults: PBES2, PBKDF2 with HMAC-SHA256, AES-256-CBC.
openssl pkcs8 -topk8 -v2 aes-256-cbc -in ec-plain.key -passout "$P" -out ec-pkcs8-aes256.key
openssl pkcs8 -topk8 -v2 aes-256-cbc -in rsa-plain.key -passout "$P" -out rsa-pkcs8-aes256.key
openssl pkey -in rsa-plain.key -aes256 -passout "$P" -out rsa-genpkey-aes256.key
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass "$P" -out ec-genpkey-aes256.key
# Other PBES2 choices.
openssl pkcs8 -topk8 -v2 aes-128-cbc -v2prf hmacWithSHA1 -in ec-plain.key -passout "$P" -out ec-pkcs8-aes128-sha1.key
openssl pkcs8 -topk8 -v2 aes-192-cbc -v2prf hmacWithSHA512 -in ec-plain.key -passout "$P" -out ec-pkcs8-aes192-sha512.key
openssl pkcs8 -topk8 -v2 des3 -in ec-plain.key -passout "$P" -out ec-pkcs8-des3.key
# Refused with a clear error: scrypt and PKCS#12 PBE.
openssl pkcs8 -topk8 -scrypt -in ec-plain.key -passout "$P" -out ec-pkcs8-scrypt.key
openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -in ec-plain.key -passout "$P" -out ec-pkcs8-v1.key 2>/dev/null || true
chmod 0644 *.key
