// Command iotc-certs makes X.509 test certificates for IoT Central and the
// local emulator, like the Node client's generate-certificates tool:
//
//	iotc-certs ca     -out certs [-intermediate]     a root CA (and an intermediate CA)
//	iotc-certs device -out certs -id my-device       a device certificate, CN = device id
//	iotc-certs verify -out certs -code 1A2B3C...     the proof-of-possession certificate
//
// Keys are ECDSA P-256 PEM files written with mode 0600; with
// -passphrase-env VAR they are encrypted (PKCS#8, PBES2 with PBKDF2-SHA256
// and AES-256-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes them)
// with the passphrase in the environment variable VAR. These are test
// certificates: keep production CAs in a vault or an HSM.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "iotc-certs:", err)
		os.Exit(2)
	}
}

const usage = `iotc-certs makes X.509 test certificates for a device that connects to
Azure IoT Central (or the iotc-go emulator) with a certificate instead of a key.

The X.509 flow, in three steps:

  1. Make a CA (once per app):
       iotc-certs ca -out certs
     writes certs/root-ca.pem (upload it to the enrollment group) and
     certs/root-ca.key (keep it secret). With -intermediate it also makes
     certs/intermediate-ca.pem/.key, and device certificates are signed by
     the intermediate (the device then sends the chain).

  2. Prove you own the CA (IoT Central shows a verification code after the
     upload; the emulator does not ask for it):
       iotc-certs verify -out certs -code <verification code>
     writes certs/verification.pem, signed by the root CA: upload it.

  3. Make one certificate per device; its subject CN is the device id:
       iotc-certs device -out certs -id my-device
     writes certs/my-device.pem (the certificate, then the intermediate if
     any) and certs/my-device.key. Connect with
       iotc.X509Files("certs/my-device.pem", "certs/my-device.key", passphrase)

Subcommands: ca, device, verify. Run "iotc-certs <subcommand> -h" for flags.
Keys are ECDSA P-256, written with mode 0600. Set -passphrase-env to the
name of an environment variable holding a passphrase to encrypt them
(PKCS#8 AES-256-CBC, readable by openssl and by iotc.X509Files); the CA
keys are read with the same passphrase.
`

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("missing subcommand (ca, device or verify)")
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	case "ca":
		return runCA(args[1:], stdout, stderr)
	case "device":
		return runDevice(args[1:], stdout, stderr)
	case "verify":
		return runVerify(args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown subcommand %q (want ca, device or verify)", args[0])
}

// common are the flags of every subcommand.
type common struct {
	out     string
	passEnv string
	days    int
}

func newFlags(name, doc string, stderr io.Writer, c *common) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: iotc-certs %s [flags]\n\n%s\n\nFlags:\n", name, doc)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.out, "out", "certs", "directory of the certificates and keys (created with mode 0700)")
	fs.StringVar(&c.passEnv, "passphrase-env", "", "name of an environment variable with the passphrase that encrypts the new key and decrypts the CA keys (empty: keys are not encrypted)")
	fs.IntVar(&c.days, "days", 365, "validity in days")
	return fs
}

func (c *common) passphrase() (string, error) {
	if c.passEnv == "" {
		return "", nil
	}
	p := os.Getenv(c.passEnv)
	if p == "" {
		return "", fmt.Errorf("-passphrase-env %s: the variable is empty or not set", c.passEnv)
	}
	return p, nil
}

func runCA(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlags("ca", "Makes a root CA (root-ca.pem, root-ca.key) and, with -intermediate,\nan intermediate CA signed by it (intermediate-ca.pem, intermediate-ca.key).\nUpload root-ca.pem to an X.509 enrollment group.", stderr, &c)
	inter := fs.Bool("intermediate", false, "also make an intermediate CA that signs the device certificates")
	cn := fs.String("cn", "iotc-go test root CA", "subject CN of the root CA")
	force := fs.Bool("force", false, "overwrite an existing CA")
	if err := parse(fs, args); err != nil {
		return err
	}
	pass, err := c.passphrase()
	if err != nil {
		return err
	}
	if c.days < 1 {
		return errors.New("-days must be at least 1")
	}
	if !*force {
		if _, err := os.Stat(c.path(rootName + ".key")); err == nil {
			return fmt.Errorf("%s exists: use -force to replace the CA (devices signed by it stop working)", c.path(rootName+".key"))
		}
	}
	files, err := makeCA(c.out, *cn, *inter, c.days, pass)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintln(stdout, "wrote", f)
	}
	return nil
}

func runDevice(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlags("device", "Makes the certificate of one device, signed by the intermediate CA\nif there is one, else by the root CA: <id>.pem (the certificate, then the\nintermediate) and <id>.key. The subject CN is the device id.", stderr, &c)
	id := fs.String("id", "", "device id: the certificate's subject CN (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := validID(*id); err != nil {
		return err
	}
	pass, err := c.passphrase()
	if err != nil {
		return err
	}
	if c.days < 1 {
		return errors.New("-days must be at least 1")
	}
	files, err := makeDevice(c.out, *id, c.days, pass)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Fprintln(stdout, "wrote", f)
	}
	return nil
}

func runVerify(args []string, stdout, stderr io.Writer) error {
	var c common
	fs := newFlags("verify", "Makes verification.pem: a certificate whose CN is the verification code\nIoT Central (or DPS) shows for an uploaded CA, signed by that CA's key, to\nprove you own it (proof of possession).", stderr, &c)
	code := fs.String("code", "", "the verification code (required)")
	ca := fs.String("ca", rootName, "which CA to prove: root-ca or intermediate-ca")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *code == "" {
		return errors.New("-code is required: copy it from the enrollment group's certificate page")
	}
	if *ca != rootName && *ca != interName {
		return fmt.Errorf("-ca %q: want %s or %s", *ca, rootName, interName)
	}
	pass, err := c.passphrase()
	if err != nil {
		return err
	}
	f, err := makeVerification(c.out, *ca, *code, c.days, pass)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "wrote", f)
	return nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
