package pdu

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Opcodes (RFC 7143 §11.2.1.2).
const (
	OpNopOut    = 0x00
	OpSCSICmd   = 0x01
	OpTMFReq    = 0x02
	OpLoginReq  = 0x03
	OpTextReq   = 0x04
	OpDataOut   = 0x05
	OpLogoutReq = 0x06
	OpSNACKReq  = 0x10

	OpNopIn      = 0x20
	OpSCSIResp   = 0x21
	OpTMFResp    = 0x22
	OpLoginResp  = 0x23
	OpTextResp   = 0x24
	OpDataIn     = 0x25
	OpLogoutResp = 0x26
	OpR2T        = 0x31
	OpAsyncMsg   = 0x32
	OpReject     = 0x3f
)

// Reject reasons (RFC 7143 §11.17.1).
const (
	RejectDataDigest      = 0x02
	RejectSNACK           = 0x03
	RejectProtocolError   = 0x04
	RejectNotSupported    = 0x05
	RejectImmediateCmd    = 0x06
	RejectTaskInProgress  = 0x07
	RejectInvalidDataAck  = 0x08
	RejectInvalidPDUField = 0x09
	RejectOutOfResources  = 0x0a
	RejectWaitingLogout   = 0x0c
)

const (
	BHSLen       = 48
	DigestLen    = 4
	MaxAHSBytes  = 255 * 4 // TotalAHSLength is one byte of 4-byte words
	ReservedTag  = 0xffffffff
	FlagFinal    = 0x80
	FlagImmed    = 0x40
	FlagContinue = 0x40 // login/text C bit
	FlagRead     = 0x40 // SCSI command R bit
	FlagWrite    = 0x20 // SCSI command W bit
)

// AHS types (RFC 7143 §11.2.2.2).
const (
	AHSExtendedCDB = 1
	AHSBidiReadLen = 2
)

// castagnoli is the CRC32C table; it is built once and only read.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C computes the iSCSI digest (CRC32C) of b.
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// CRC32CUpdate continues a CRC32C over b.
func CRC32CUpdate(sum uint32, b []byte) uint32 { return crc32.Update(sum, castagnoli, b) }

// ErrPDU marks framing errors that end a connection.
var ErrPDU = errors.New("malformed pdu")

// Header is a received BHS plus its AHS. It never holds the data segment:
// the handler for the opcode decides where the data goes.
type Header struct {
	B   [BHSLen]byte
	AHS []byte // raw AHS (TotalAHSLength*4 bytes), nil when absent
}

func (h *Header) Opcode() uint8        { return h.B[0] & 0x3f }
func (h *Header) Immediate() bool      { return h.B[0]&FlagImmed != 0 }
func (h *Header) Flags() uint8         { return h.B[1] }
func (h *Header) Final() bool          { return h.B[1]&FlagFinal != 0 }
func (h *Header) TotalAHSLen() int     { return int(h.B[4]) * 4 }
func (h *Header) DataLen() uint32      { return uint32(h.B[5])<<16 | uint32(h.B[6])<<8 | uint32(h.B[7]) }
func (h *Header) LUNField() [8]byte    { return [8]byte(h.B[8:16]) }
func (h *Header) ITT() uint32          { return h.U32(16) }
func (h *Header) U32(off int) uint32   { return binary.BigEndian.Uint32(h.B[off : off+4]) }
func (h *Header) U16(off int) uint16   { return binary.BigEndian.Uint16(h.B[off : off+2]) }
func (h *Header) CmdSN() uint32        { return h.U32(24) }
func (h *Header) ExpStatSN() uint32    { return h.U32(28) }
func (h *Header) TTT() uint32          { return h.U32(20) }
func (h *Header) EDTL() uint32         { return h.U32(20) }
func (h *Header) DataSN() uint32       { return h.U32(36) }
func (h *Header) BufferOffset() uint32 { return h.U32(40) }

// Fields of target-to-initiator PDUs (RFC 7143 §11.4 ff.).
func (h *Header) StatSN() uint32        { return h.U32(24) }
func (h *Header) ExpCmdSN() uint32      { return h.U32(28) }
func (h *Header) MaxCmdSN() uint32      { return h.U32(32) }
func (h *Header) ResidualCount() uint32 { return h.U32(44) }

// PadLen is the number of pad bytes after a data segment of n bytes.
func PadLen(n uint32) uint32 { return (4 - n%4) % 4 }

// AHSEntry is one parsed additional header segment.
type AHSEntry struct {
	Type uint8
	Data []byte // AHS-specific bytes (after the type byte), AHSLength long
}

// ParseAHS splits raw AHS bytes into entries; it never reads past raw.
func ParseAHS(raw []byte) ([]AHSEntry, error) {
	var out []AHSEntry
	for len(raw) > 0 {
		if len(raw) < 4 {
			return nil, fmt.Errorf("ahs: %d trailing bytes: %w", len(raw), ErrPDU)
		}
		l := int(binary.BigEndian.Uint16(raw[0:2]))
		typ := raw[2]
		total := 3 + l
		total += (4 - total%4) % 4
		if l == 0 || total > len(raw) {
			return nil, fmt.Errorf("ahs: length %d of %d bytes: %w", l, len(raw), ErrPDU)
		}
		out = append(out, AHSEntry{Type: typ, Data: raw[3 : 3+l]})
		raw = raw[total:]
	}
	return out, nil
}

// SCSICDB returns the full CDB of a SCSI command header: the 16 bytes of the
// BHS plus an extended-CDB AHS if present, and the bidirectional expected
// read length when an AHS carries one.
func (h *Header) SCSICDB() (cdb []byte, bidiRead uint32, hasBidi bool, err error) {
	cdb = h.B[32:48]
	if len(h.AHS) == 0 {
		return cdb, 0, false, nil
	}
	ents, err := ParseAHS(h.AHS)
	if err != nil {
		return nil, 0, false, err
	}
	for _, e := range ents {
		switch e.Type {
		case AHSExtendedCDB:
			// byte 0 reserved, then the CDB bytes beyond 16.
			if len(e.Data) < 2 {
				return nil, 0, false, fmt.Errorf("extended cdb ahs too short: %w", ErrPDU)
			}
			full := make([]byte, 16+len(e.Data)-1)
			copy(full, h.B[32:48])
			copy(full[16:], e.Data[1:])
			cdb = full
		case AHSBidiReadLen:
			if len(e.Data) != 5 {
				return nil, 0, false, fmt.Errorf("bidi ahs length %d: %w", len(e.Data), ErrPDU)
			}
			bidiRead = binary.BigEndian.Uint32(e.Data[1:5])
			hasBidi = true
		}
	}
	return cdb, bidiRead, hasBidi, nil
}

// Limits bounds what ReadHeader and ReadData accept.
type Limits struct {
	HeaderDigest bool
	DataDigest   bool
	MaxData      uint32 // largest data segment accepted
}

// ReadHeader reads one BHS, its AHS and header digest from r. It checks the
// data segment length against lim.MaxData but does not read the segment.
func ReadHeader(r io.Reader, h *Header, lim Limits) error {
	if _, err := io.ReadFull(r, h.B[:]); err != nil {
		return err
	}
	h.AHS = h.AHS[:0]
	if n := h.TotalAHSLen(); n > 0 {
		if cap(h.AHS) < n {
			h.AHS = make([]byte, n, MaxAHSBytes)
		}
		h.AHS = h.AHS[:n]
		if _, err := io.ReadFull(r, h.AHS); err != nil {
			return fmt.Errorf("ahs: %w", err)
		}
	}
	if lim.HeaderDigest {
		var d [DigestLen]byte
		if _, err := io.ReadFull(r, d[:]); err != nil {
			return fmt.Errorf("header digest: %w", err)
		}
		sum := crc32.Update(CRC32C(h.B[:]), castagnoli, h.AHS)
		if binary.LittleEndian.Uint32(d[:]) != sum {
			return fmt.Errorf("header digest mismatch: %w", ErrPDU)
		}
	}
	if dl := h.DataLen(); dl > lim.MaxData {
		return fmt.Errorf("data segment %d bytes over limit %d: %w", dl, lim.MaxData, ErrPDU)
	}
	return nil
}

// ReadData reads a data segment of len(dst) bytes into dst, then its
// padding and data digest (when negotiated). dst must be exactly the
// segment length announced in the header.
func ReadData(r io.Reader, dst []byte, dataDigest bool) error {
	if !dataDigest && PadLen(uint32(len(dst))) == 0 {
		// No tail to read: nothing to allocate (a Tail given to
		// ReadDataTail lives on the heap).
		_, err := io.ReadFull(r, dst)
		return err
	}
	var tail Tail
	return ReadDataTail(r, dst, dataDigest, &tail)
}

// Tail holds a data segment's padding and digest while they are read.
type Tail [3 + DigestLen]byte

// ReadDataTail is ReadData with the caller's scratch space for the padding
// and digest: a reader that keeps one Tail reads without allocating (the
// tail passed to an io.Reader escapes to the heap).
func ReadDataTail(r io.Reader, dst []byte, dataDigest bool, tail *Tail) error {
	if len(dst) == 0 {
		return nil // no segment, no padding, no digest
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return err
	}
	p := PadLen(uint32(len(dst)))
	n := p
	if dataDigest {
		n += DigestLen
	}
	if n == 0 {
		return nil
	}
	// Padding and digest into the caller's tail: from a bufio.Reader byte
	// by byte, so that tail never reaches an interface call and stays
	// where the caller put it (ReadData's: on its stack).
	if br, ok := r.(*bufio.Reader); ok {
		for i := range n {
			b, err := br.ReadByte()
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			tail[i] = b
		}
	} else {
		// Not a bufio.Reader (tests): a copy, so tail never escapes.
		t := make([]byte, n)
		if _, err := io.ReadFull(r, t); err != nil {
			return err
		}
		copy(tail[:], t)
	}
	if dataDigest {
		sum := crc32.Update(CRC32C(dst), castagnoli, tail[:p])
		if binary.LittleEndian.Uint32(tail[p:n]) != sum {
			return fmt.Errorf("data digest mismatch: %w", ErrPDU)
		}
	}
	return nil
}

// DiscardData skips a data segment of n bytes (plus padding and digest).
func DiscardData(r io.Reader, n uint32, dataDigest bool) error {
	total := int64(n + PadLen(n))
	if dataDigest && n > 0 {
		total += DigestLen
	}
	_, err := io.CopyN(io.Discard, r, total)
	return err
}

// SetDataLen stores a data segment length in a BHS.
func SetDataLen(b *[BHSLen]byte, n uint32) {
	b[5], b[6], b[7] = byte(n>>16), byte(n>>8), byte(n)
}

// Put32 and Put16 store big-endian fields.
func Put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
func Put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
