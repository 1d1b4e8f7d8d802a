package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Opcodes (RFC 7143 §11.2.1.2).
const (
	opNopOut    = 0x00
	opSCSICmd   = 0x01
	opTMFReq    = 0x02
	opLoginReq  = 0x03
	opTextReq   = 0x04
	opDataOut   = 0x05
	opLogoutReq = 0x06
	opSNACKReq  = 0x10

	opNopIn      = 0x20
	opSCSIResp   = 0x21
	opTMFResp    = 0x22
	opLoginResp  = 0x23
	opTextResp   = 0x24
	opDataIn     = 0x25
	opLogoutResp = 0x26
	opR2T        = 0x31
	opAsyncMsg   = 0x32
	opReject     = 0x3f
)

// Reject reasons (RFC 7143 §11.17.1).
const (
	rejectDataDigest      = 0x02
	rejectSNACK           = 0x03
	rejectProtocolError   = 0x04
	rejectNotSupported    = 0x05
	rejectImmediateCmd    = 0x06
	rejectTaskInProgress  = 0x07
	rejectInvalidDataAck  = 0x08
	rejectInvalidPDUField = 0x09
	rejectOutOfResources  = 0x0a
	rejectWaitingLogout   = 0x0c
)

const (
	bhsLen       = 48
	digestLen    = 4
	maxAHSBytes  = 255 * 4 // TotalAHSLength is one byte of 4-byte words
	reservedTag  = 0xffffffff
	flagFinal    = 0x80
	flagImmed    = 0x40
	flagContinue = 0x40 // login/text C bit
	flagRead     = 0x40 // SCSI command R bit
	flagWrite    = 0x20 // SCSI command W bit
)

// AHS types (RFC 7143 §11.2.2.2).
const (
	ahsExtendedCDB = 1
	ahsBidiReadLen = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c computes the iSCSI digest (CRC32C) of b.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// errPDU marks framing errors that end a connection.
var errPDU = errors.New("malformed pdu")

// header is a received BHS plus its AHS. It never holds the data segment:
// the handler for the opcode decides where the data goes.
type header struct {
	b   [bhsLen]byte
	ahs []byte // raw AHS (TotalAHSLength*4 bytes), nil when absent
}

func (h *header) opcode() uint8        { return h.b[0] & 0x3f }
func (h *header) immediate() bool      { return h.b[0]&flagImmed != 0 }
func (h *header) flags() uint8         { return h.b[1] }
func (h *header) final() bool          { return h.b[1]&flagFinal != 0 }
func (h *header) totalAHSLen() int     { return int(h.b[4]) * 4 }
func (h *header) dataLen() uint32      { return uint32(h.b[5])<<16 | uint32(h.b[6])<<8 | uint32(h.b[7]) }
func (h *header) lunField() [8]byte    { return [8]byte(h.b[8:16]) }
func (h *header) itt() uint32          { return h.u32(16) }
func (h *header) u32(off int) uint32   { return binary.BigEndian.Uint32(h.b[off : off+4]) }
func (h *header) u16(off int) uint16   { return binary.BigEndian.Uint16(h.b[off : off+2]) }
func (h *header) cmdSN() uint32        { return h.u32(24) }
func (h *header) expStatSN() uint32    { return h.u32(28) }
func (h *header) ttt() uint32          { return h.u32(20) }
func (h *header) edtl() uint32         { return h.u32(20) }
func (h *header) dataSN() uint32       { return h.u32(36) }
func (h *header) bufferOffset() uint32 { return h.u32(40) }

// padLen is the number of pad bytes after a data segment of n bytes.
func padLen(n uint32) uint32 { return (4 - n%4) % 4 }

// ahsEntry is one parsed additional header segment.
type ahsEntry struct {
	typ  uint8
	data []byte // AHS-specific bytes (after the type byte), AHSLength long
}

// parseAHS splits raw AHS bytes into entries; it never reads past raw.
func parseAHS(raw []byte) ([]ahsEntry, error) {
	var out []ahsEntry
	for len(raw) > 0 {
		if len(raw) < 4 {
			return nil, fmt.Errorf("ahs: %d trailing bytes: %w", len(raw), errPDU)
		}
		l := int(binary.BigEndian.Uint16(raw[0:2]))
		typ := raw[2]
		total := 3 + l
		total += (4 - total%4) % 4
		if l == 0 || total > len(raw) {
			return nil, fmt.Errorf("ahs: length %d of %d bytes: %w", l, len(raw), errPDU)
		}
		out = append(out, ahsEntry{typ: typ, data: raw[3 : 3+l]})
		raw = raw[total:]
	}
	return out, nil
}

// scsiCDB returns the full CDB of a SCSI command header: the 16 bytes of the
// BHS plus an extended-CDB AHS if present, and the bidirectional expected
// read length when an AHS carries one.
func (h *header) scsiCDB() (cdb []byte, bidiRead uint32, hasBidi bool, err error) {
	cdb = h.b[32:48]
	if len(h.ahs) == 0 {
		return cdb, 0, false, nil
	}
	ents, err := parseAHS(h.ahs)
	if err != nil {
		return nil, 0, false, err
	}
	for _, e := range ents {
		switch e.typ {
		case ahsExtendedCDB:
			// byte 0 reserved, then the CDB bytes beyond 16.
			if len(e.data) < 2 {
				return nil, 0, false, fmt.Errorf("extended cdb ahs too short: %w", errPDU)
			}
			full := make([]byte, 16+len(e.data)-1)
			copy(full, h.b[32:48])
			copy(full[16:], e.data[1:])
			cdb = full
		case ahsBidiReadLen:
			if len(e.data) != 5 {
				return nil, 0, false, fmt.Errorf("bidi ahs length %d: %w", len(e.data), errPDU)
			}
			bidiRead = binary.BigEndian.Uint32(e.data[1:5])
			hasBidi = true
		}
	}
	return cdb, bidiRead, hasBidi, nil
}

// pduLimits bounds what readHeader and readData accept.
type pduLimits struct {
	headerDigest bool
	dataDigest   bool
	maxData      uint32 // largest data segment accepted
}

// readHeader reads one BHS, its AHS and header digest from r. It checks the
// data segment length against lim.maxData but does not read the segment.
func readHeader(r io.Reader, h *header, lim pduLimits) error {
	if _, err := io.ReadFull(r, h.b[:]); err != nil {
		return err
	}
	h.ahs = h.ahs[:0]
	if n := h.totalAHSLen(); n > 0 {
		if cap(h.ahs) < n {
			h.ahs = make([]byte, n, maxAHSBytes)
		}
		h.ahs = h.ahs[:n]
		if _, err := io.ReadFull(r, h.ahs); err != nil {
			return fmt.Errorf("ahs: %w", err)
		}
	}
	if lim.headerDigest {
		var d [digestLen]byte
		if _, err := io.ReadFull(r, d[:]); err != nil {
			return fmt.Errorf("header digest: %w", err)
		}
		sum := crc32.Update(crc32c(h.b[:]), castagnoli, h.ahs)
		if binary.LittleEndian.Uint32(d[:]) != sum {
			return fmt.Errorf("header digest mismatch: %w", errPDU)
		}
	}
	if dl := h.dataLen(); dl > lim.maxData {
		return fmt.Errorf("data segment %d bytes over limit %d: %w", dl, lim.maxData, errPDU)
	}
	return nil
}

// readData reads a data segment of len(dst) bytes into dst, then its
// padding and data digest (when negotiated). dst must be exactly the
// segment length announced in the header.
func readData(r io.Reader, dst []byte, dataDigest bool) error {
	if len(dst) == 0 {
		return nil // no segment, no padding, no digest
	}
	if _, err := io.ReadFull(r, dst); err != nil {
		return err
	}
	var tail [3 + digestLen]byte
	p := padLen(uint32(len(dst)))
	n := p
	if dataDigest {
		n += digestLen
	}
	if n == 0 {
		return nil
	}
	if _, err := io.ReadFull(r, tail[:n]); err != nil {
		return err
	}
	if dataDigest {
		sum := crc32.Update(crc32c(dst), castagnoli, tail[:p])
		if binary.LittleEndian.Uint32(tail[p:n]) != sum {
			return fmt.Errorf("data digest mismatch: %w", errPDU)
		}
	}
	return nil
}

// discardData skips a data segment of n bytes (plus padding and digest).
func discardData(r io.Reader, n uint32, dataDigest bool) error {
	total := int64(n + padLen(n))
	if dataDigest && n > 0 {
		total += digestLen
	}
	_, err := io.CopyN(io.Discard, r, total)
	return err
}

// setDataLen stores a data segment length in a BHS.
func setDataLen(b *[bhsLen]byte, n uint32) {
	b[5], b[6], b[7] = byte(n>>16), byte(n>>8), byte(n)
}

func put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }

// zeroPad is the source of pad bytes.
var zeroPad [4]byte
