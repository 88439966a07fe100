package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/tpm"
	"github.com/proofline/proofline/internal/durable"
)

// TCGLogPath is where Linux publishes the TCG event log of the TPM's PCRs.
const TCGLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// DefaultTPMPCRs is the PCR selection quoted unless configured: firmware, boot loader, kernel and
// its command line. It must equal the verifier policy's tpm.pcrs exactly.
var DefaultTPMPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// VTPM takes vTPM quotes for the agent. Its attestation key is created once per process (the
// standard AK template under the endorsement hierarchy gives the same key every time on one
// TPM), and the key's digest goes into runtime_data (RuntimeData.TPMAKDigest) so that the
// hardware report's REPORT_DATA binds it: the verifier accepts the quote only through that
// binding (attest/README.md).
type VTPM struct {
	tpm transport.TPM
	ak  *tpm.AK
	// Bank and PCRs are the quoted selection; it must equal the policy's tpm section.
	Bank string
	PCRs []int
	// LogPath is the TCG event log to include; empty includes none.
	LogPath string

	mu     sync.Mutex // one TPM command sequence at a time
	closer interface{ Close() error }
}

// NewVTPM creates the attestation key on t and returns a VTPM quoting bank/pcrs.
func NewVTPM(t transport.TPM, bank string, pcrs []int) (*VTPM, error) {
	if bank == "" {
		bank = "sha256"
	}
	if len(pcrs) == 0 {
		pcrs = DefaultTPMPCRs
	}
	ak, err := tpm.CreateAK(t)
	if err != nil {
		return nil, fmt.Errorf("vTPM: creating the attestation key: %w", err)
	}
	return &VTPM{tpm: t, ak: ak, Bank: bank, PCRs: pcrs, LogPath: TCGLogPath}, nil
}

// AKDigest is the lower-case hex SHA-256 of the attestation key's TPMT_PUBLIC, for runtime_data.
func (v *VTPM) AKDigest() string {
	sum := sha256.Sum256(v.ak.Public)
	return hex.EncodeToString(sum[:])
}

// Close flushes the attestation key, and closes the device OpenVTPM opened.
func (v *VTPM) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	err := v.ak.Close(v.tpm)
	if v.closer != nil {
		err = errors.Join(err, v.closer.Close())
	}
	return err
}

// add quotes the PCRs for nonce and runtimeData and puts the quote in ev, and with withLog the
// TCG event log when one is published. runtimeData must name this VTPM's key.
func (v *VTPM) add(ev *attest.Evidence, nonce, runtimeData []byte, withLog bool) error {
	rd, err := attest.ParseRuntimeData(runtimeData)
	if err != nil || rd.TPMAKDigest != v.AKDigest() {
		return errors.New("vTPM: runtime_data does not name the attestation key (tpm_ak_sha256): the verifier would refuse the quote")
	}
	extra := attest.TPMExtraData(nonce, runtimeData)
	v.mu.Lock()
	q, err := tpm.Quote(v.tpm, v.ak, v.Bank, v.PCRs, extra[:])
	v.mu.Unlock()
	if err != nil {
		return fmt.Errorf("vTPM: %w", err)
	}
	ev.TPM = q
	if !withLog || v.LogPath == "" {
		return nil
	}
	log, err := durable.ReadLimited(v.LogPath, attest.MaxEventLogSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // no firmware log: the quote alone, a policy with measured_boot.tcg will say so
	case err != nil:
		return fmt.Errorf("vTPM: reading the TCG event log: %w", err)
	}
	if ev.EventLogs == nil {
		ev.EventLogs = &attest.EventLogs{}
	}
	ev.EventLogs.TCG = log
	return nil
}

// TPM modes: whether the agent adds vTPM quotes.
const (
	TPMAuto = "auto" // when the VM has a TPM device
	TPMOn   = "on"   // always; no TPM is an error
	TPMOff  = "off"  // never
)

// OpenVTPM opens this VM's TPM with open (nil means tpm.Open: /dev/tpmrm0, else /dev/tpm0) for
// mode. With TPMAuto and no TPM device it returns nil and no error; with TPMOn and no TPM device
// the error wraps tpm.ErrNoTPM; with TPMOff it returns nil without opening anything. The VTPM's
// Close flushes the key and closes the device.
func OpenVTPM(mode, bank string, pcrs []int, open func() (transport.TPMCloser, error)) (*VTPM, error) {
	switch mode {
	case TPMOff:
		return nil, nil
	case TPMAuto, TPMOn, "":
	default:
		return nil, fmt.Errorf("tpm mode %q is not auto, on or off", mode)
	}
	if open == nil {
		open = tpm.Open
	}
	dev, err := open()
	if errors.Is(err, tpm.ErrNoTPM) && mode != TPMOn {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := NewVTPM(dev, bank, pcrs)
	if err != nil {
		dev.Close()
		return nil, err
	}
	v.closer = dev
	return v, nil
}
