//go:build !linux

package agent

import (
	"errors"
	"net"
)

// peerCred is Linux-only (SO_PEERCRED): elsewhere every caller is refused.
func peerCred(net.Conn) (*Peer, error) {
	return nil, errors.New("peer credentials (SO_PEERCRED) are available on Linux only")
}
