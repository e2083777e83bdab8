package domain

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"hash"
)

// Encrypted PKCS#8 (RFC 5958 EncryptedPrivateKeyInfo) with PBES2 (RFC 8018):
// what OpenSSL 3 writes by default for `openssl pkcs8 -topk8`,
// `openssl genpkey -aes256` and `openssl req -newkey` without -nodes. The
// primitives are the standard library's (crypto/pbkdf2, crypto/aes); only
// the ASN.1 envelope is read here.

var (
	oidPBES2  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}

	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA224 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}

	oidAES128CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3   = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
)

// maxPBKDF2Iterations bounds the work a hostile key file can ask for
// (OpenSSL 3 writes 2048; 10 million takes seconds).
const maxPBKDF2Iterations = 10_000_000

type encryptedPrivateKeyInfo struct {
	Algorithm     pkix.AlgorithmIdentifier
	EncryptedData []byte
}

type pbes2Params struct {
	KeyDerivationFunc pkix.AlgorithmIdentifier
	EncryptionScheme  pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt           []byte
	IterationCount int
	KeyLength      int                      `asn1:"optional"`
	PRF            pkix.AlgorithmIdentifier `asn1:"optional"`
}

// errWrongPassphrase is what a failed decryption reports: with CBC and
// PKCS#7 padding a wrong passphrase and a damaged file look alike.
var errWrongPassphrase = fmt.Errorf("%w: wrong passphrase for the private key (or a damaged key file)", ErrInvalidConfig)

// DecryptPKCS8 decrypts a DER EncryptedPrivateKeyInfo (PEM type
// "ENCRYPTED PRIVATE KEY") with passphrase and returns the DER PKCS#8
// PrivateKeyInfo. It supports PBES2 with PBKDF2 (HMAC-SHA1/224/256/384/512)
// and AES-128/192/256-CBC or 3DES-CBC: OpenSSL 3's defaults and its `-v2`
// choices. Errors wrap ErrInvalidConfig: a missing or wrong passphrase,
// an unsupported scheme (scrypt, PKCS#12 PBE) named in the text, or a
// malformed structure. They never contain the passphrase or key bytes.
func DecryptPKCS8(der []byte, passphrase string) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: malformed encrypted PKCS#8 key", ErrInvalidConfig)
	}
	if !info.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("%w: encrypted PKCS#8 key uses scheme %v; only PBES2 (OpenSSL's default) is supported: re-encrypt with `openssl pkcs8 -topk8 -v2 aes-256-cbc`", ErrInvalidConfig, info.Algorithm.Algorithm)
	}
	var params pbes2Params
	if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil {
		return nil, fmt.Errorf("%w: malformed PBES2 parameters", ErrInvalidConfig)
	}
	kdf := params.KeyDerivationFunc
	if kdf.Algorithm.Equal(oidScrypt) {
		return nil, fmt.Errorf("%w: scrypt-encrypted keys are not supported: re-encrypt with `openssl pkcs8 -topk8 -v2 aes-256-cbc`", ErrInvalidConfig)
	}
	if !kdf.Algorithm.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("%w: unsupported key derivation %v in the encrypted key", ErrInvalidConfig, kdf.Algorithm)
	}
	var kp pbkdf2Params
	if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &kp); err != nil {
		return nil, fmt.Errorf("%w: malformed PBKDF2 parameters", ErrInvalidConfig)
	}
	if kp.IterationCount < 1 || kp.IterationCount > maxPBKDF2Iterations {
		return nil, fmt.Errorf("%w: PBKDF2 iteration count %d out of range 1..%d", ErrInvalidConfig, kp.IterationCount, maxPBKDF2Iterations)
	}
	prf, err := pbkdf2PRF(kp.PRF.Algorithm)
	if err != nil {
		return nil, err
	}
	keyLen, newBlock, err := pbes2Cipher(params.EncryptionScheme.Algorithm)
	if err != nil {
		return nil, err
	}
	if kp.KeyLength != 0 && kp.KeyLength != keyLen {
		return nil, fmt.Errorf("%w: PBKDF2 key length %d does not fit the cipher", ErrInvalidConfig, kp.KeyLength)
	}
	var iv []byte
	if _, err := asn1.Unmarshal(params.EncryptionScheme.Parameters.FullBytes, &iv); err != nil {
		return nil, fmt.Errorf("%w: malformed cipher IV in the encrypted key", ErrInvalidConfig)
	}
	if passphrase == "" {
		return nil, fmt.Errorf("%w: the private key is encrypted and no passphrase was given", ErrInvalidConfig)
	}
	key, err := pbkdf2.Key(prf, passphrase, kp.Salt, kp.IterationCount, keyLen)
	if err != nil {
		return nil, fmt.Errorf("%w: derive the key encryption key: %v", ErrInvalidConfig, err)
	}
	block, err := newBlock(key)
	if err != nil {
		return nil, fmt.Errorf("%w: cipher: %v", ErrInvalidConfig, err)
	}
	bs := block.BlockSize()
	data := info.EncryptedData
	if len(iv) != bs {
		return nil, fmt.Errorf("%w: cipher IV of %d bytes, want %d", ErrInvalidConfig, len(iv), bs)
	}
	if len(data) == 0 || len(data)%bs != 0 {
		return nil, fmt.Errorf("%w: encrypted key is not a whole number of cipher blocks", ErrInvalidConfig)
	}
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, data)
	plain, ok := unpadPKCS7(plain, bs)
	if !ok {
		return nil, errWrongPassphrase
	}
	// A wrong passphrase passes the padding check about once in 256 tries:
	// the result must also parse as a private key.
	if _, err := x509.ParsePKCS8PrivateKey(plain); err != nil {
		return nil, errWrongPassphrase
	}
	return plain, nil
}

func pbkdf2PRF(oid asn1.ObjectIdentifier) (func() hash.Hash, error) {
	switch {
	case len(oid) == 0, oid.Equal(oidHMACSHA1): // the RFC 8018 default
		return sha1.New, nil
	case oid.Equal(oidHMACSHA224):
		return sha256.New224, nil
	case oid.Equal(oidHMACSHA256):
		return sha256.New, nil
	case oid.Equal(oidHMACSHA384):
		return sha512.New384, nil
	case oid.Equal(oidHMACSHA512):
		return sha512.New, nil
	}
	return nil, fmt.Errorf("%w: unsupported PBKDF2 PRF %v in the encrypted key", ErrInvalidConfig, oid)
}

func pbes2Cipher(oid asn1.ObjectIdentifier) (int, func([]byte) (cipher.Block, error), error) {
	switch {
	case oid.Equal(oidAES128CBC):
		return 16, aes.NewCipher, nil
	case oid.Equal(oidAES192CBC):
		return 24, aes.NewCipher, nil
	case oid.Equal(oidAES256CBC):
		return 32, aes.NewCipher, nil
	case oid.Equal(oidDESEDE3):
		return 24, des.NewTripleDESCipher, nil
	}
	return 0, nil, fmt.Errorf("%w: unsupported cipher %v in the encrypted key (use aes-256-cbc)", ErrInvalidConfig, oid)
}

// unpadPKCS7 removes PKCS#7 padding in constant time with respect to the
// padding bytes' values.
func unpadPKCS7(b []byte, bs int) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	n := int(b[len(b)-1])
	if n == 0 || n > bs || n > len(b) {
		return nil, false
	}
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(n)
	}
	if !hmac.Equal(b[len(b)-n:], want) {
		return nil, false
	}
	return b[:len(b)-n], true
}
