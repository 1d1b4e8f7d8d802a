package iscsi

import "github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"

// The PDU codec (opcodes, BHS accessors, readHeader/readData with digests and
// limits, AHS, text keys, CHAP helpers) lives in metavol/volume/iscsi/pdu,
// shared with lmtgt's initiator. This file keeps the target's local names
// for the two types it uses everywhere.

// header is a received BHS plus its AHS.
type header = pdu.Header

// kv is one text key=value pair.
type kv = pdu.KV

// zeroPad is the source of pad bytes.
var zeroPad [4]byte
