package agent

import (
	"fmt"
	"net"
	"syscall"
)

// peerCred returns the credentials of the process at the other end of a unix socket connection,
// as the kernel recorded them at connect(2) (SO_PEERCRED, unix(7)): they cannot be forged by the
// client.
func peerCred(c net.Conn) (*Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a unix socket connection (%T)", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return &Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}
