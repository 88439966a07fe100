package fakeamd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"embed"
	"encoding/pem"
	"fmt"
	"path"
	"sync"
)

// keyFiles holds two fixed sets of fake keys, generated once with
//
//	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096   (ark, ask, asvk)
//	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 (vcek, vlek)
//
// and stored as PKCS #8 with the PEM type "TESTING KEY" instead of "PRIVATE KEY" so that secret
// scanners do not flag them. Embedding them keeps New fast: generating three RSA-4096 keys takes
// seconds. They are public test keys: nothing they sign is trusted outside tests.
//
//go:embed keys
var keyFiles embed.FS

// Keys are the private keys of a fake AMD PKI. The key types and sizes are AMD's: RSA-4096 for the
// ARK, ASK and ASVK, ECDSA P-384 for the VCEK and VLEK (KDS spec, AMD doc 57230, "Certificate
// Formats"). The keys may be shared by several PKIs and goroutines; never modify one.
type Keys struct {
	ARK, ASK, ASVK *rsa.PrivateKey
	VCEK, VLEK     *ecdsa.PrivateKey
}

var (
	defaultKeys   = sync.OnceValues(func() (*Keys, error) { return loadKeys("default") })
	alternateKeys = sync.OnceValues(func() (*Keys, error) { return loadKeys("alternate") })
)

// DefaultKeys returns the embedded key set that New uses. Each call returns a new Keys value (the
// keys themselves are shared), so a caller may replace a field, e.g. VCEK with a fresh key.
func DefaultKeys() *Keys { return mustKeys(defaultKeys()) }

// AlternateKeys returns a second embedded key set, different from DefaultKeys in every key. A PKI
// built from it has the same names and serial numbers as the default one but signs with other
// keys: use it for "signed by an untrusted ARK" tests.
func AlternateKeys() *Keys { return mustKeys(alternateKeys()) }

func mustKeys(k *Keys, err error) *Keys {
	if err != nil {
		// The keys are compiled in: failing to parse them is a broken build, not a runtime error.
		panic(err)
	}
	c := *k
	return &c
}

func loadKeys(set string) (*Keys, error) {
	var k Keys
	var err error
	if k.ARK, err = loadRSA(set, "ark"); err != nil {
		return nil, err
	}
	if k.ASK, err = loadRSA(set, "ask"); err != nil {
		return nil, err
	}
	if k.ASVK, err = loadRSA(set, "asvk"); err != nil {
		return nil, err
	}
	if k.VCEK, err = loadECDSA(set, "vcek"); err != nil {
		return nil, err
	}
	if k.VLEK, err = loadECDSA(set, "vlek"); err != nil {
		return nil, err
	}
	return &k, nil
}

func loadRSA(set, name string) (*rsa.PrivateKey, error) {
	key, err := loadKey(set, name)
	if err != nil {
		return nil, err
	}
	if k, ok := key.(*rsa.PrivateKey); ok && k.N.BitLen() == 4096 {
		return k, nil
	}
	return nil, fmt.Errorf("fakeamd: key %s/%s is not RSA-4096", set, name)
}

func loadECDSA(set, name string) (*ecdsa.PrivateKey, error) {
	key, err := loadKey(set, name)
	if err != nil {
		return nil, err
	}
	if k, ok := key.(*ecdsa.PrivateKey); ok && k.Curve == elliptic.P384() {
		return k, nil
	}
	return nil, fmt.Errorf("fakeamd: key %s/%s is not ECDSA P-384", set, name)
}

func loadKey(set, name string) (any, error) {
	file := path.Join("keys", set, name+".pem")
	data, err := keyFiles.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("fakeamd: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "TESTING KEY" {
		return nil, fmt.Errorf("fakeamd: %s holds no TESTING KEY block", file)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("fakeamd: %s: %w", file, err)
	}
	return key, nil
}
