package collateraltest

import "encoding/pem"

// CertificatePEM returns the server's TLS certificate in PEM, for clients configured with a CA
// file (a PCCS with its own certificate) rather than Client.
func (s *Server) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}
