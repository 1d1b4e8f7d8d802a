// Package pdu is lmtgt's iSCSI PDU codec (RFC 7143), shared by the target
// transport (target/iscsi) and the initiator (metavol/volume/iscsi): the
// opcodes, the basic header segment (BHS) accessors, reading a header with
// its AHS and header digest and a data segment with its padding and data
// digest under a length limit, AHS parsing, text key=value encoding and
// parsing, the CHAP helpers (MD5 response, binary value decoding), and
// Sock (sock.go), the hot path's socket I/O of both sides: read(2) and
// writev(2) issued as raw system calls on the non-blocking descriptor,
// waiting through the netpoller, so that a command at queue depth 1 does
// not wake the runtime's sysmon thread (see sock.go for why).
//
// Placement: it lives under metavol/volume so that both the target transport
// (which sits above lm) and the initiator's remote data volume (which lm
// opens, below lm) can import it without a back-edge. It imports the
// standard library only and holds no mutable state; it never allocates on
// the read path beyond an AHS buffer that is reused by the caller's Header.
//
// It must never trust a length from the wire before checking it against the
// caller's Limits, and never read past the segment it was asked for.
package pdu
