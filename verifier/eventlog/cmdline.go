package eventlog

import (
	"bytes"
	"crypto"
	"errors"
)

// grubPrefixes are the labels GRUB writes in front of the strings it measures into PCR8
// (https://www.gnu.org/software/grub/manual/grub/grub.html#Measured-Boot), including the older
// Fedora/RHEL spellings go-eventlog also accepts. The digest covers the text after the label.
var grubPrefixes = []struct {
	prefix  []byte
	cmdline bool
}{
	{[]byte("grub_cmd: "), false},
	{[]byte("kernel_cmdline: "), true},
	{[]byte("module_cmdline: "), false},
	{[]byte("grub_kernel_cmdline "), true},
	{[]byte("grub_cmd "), false},
}

// grubString checks a replayed event of GRUB's register. When data carries a GRUB label, the
// digest must be the hash of the text after it, with or without one trailing NUL (GRUB versions
// differ); a mismatch means the data was changed after measurement. It returns the text, without
// a trailing NUL, when the label is a kernel command line. The event type plays no part.
func grubString(data, digest []byte, hash crypto.Hash, c *Counter) (string, bool, error) {
	for _, p := range grubPrefixes {
		if !bytes.HasPrefix(data, p.prefix) {
			continue
		}
		text := data[len(p.prefix):]
		c.Hashes++
		if !bytes.Equal(sum(hash, text), digest) {
			trimmed, hadNUL := bytes.CutSuffix(text, []byte{0})
			if !hadNUL {
				return "", false, errGRUBData
			}
			c.Hashes++
			if !bytes.Equal(sum(hash, trimmed), digest) {
				return "", false, errGRUBData
			}
		}
		text, _ = bytes.CutSuffix(text, []byte{0})
		return string(text), p.cmdline, nil
	}
	return "", false, nil
}

var errGRUBData = errors.New("event data carries a GRUB label but the text after it does not hash to the event digest")

func sum(hash crypto.Hash, b []byte) []byte {
	h := hash.New()
	h.Write(b)
	return h.Sum(nil)
}
