package iscsi

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/lmtgt/lmtgt/metavol/volume/iscsi/pdu"
)

// chapChallengeLen is the length of the challenges this target sends.
const chapChallengeLen = 16

// errAuth is any CHAP failure; the login answers 0x0201.
var errAuth = errors.New("authentication failed")

// decodeCHAPBinary decodes a CHAP binary value (pdu.DecodeCHAPBinary); a
// malformed value is an authentication failure.
func decodeCHAPBinary(v string) ([]byte, error) {
	b, err := pdu.DecodeCHAPBinary(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errAuth)
	}
	return b, nil
}

// chapState is where a CHAP exchange is.
type chapState uint8

const (
	chapNone     chapState = iota // no CHAP chosen yet
	chapWaitAlg                   // AuthMethod=CHAP agreed, waiting for CHAP_A
	chapWaitResp                  // challenge sent, waiting for CHAP_N/CHAP_R
	chapDone                      // initiator authenticated (and target, if mutual)
)

func (s chapState) String() string {
	switch s {
	case chapNone:
		return "none"
	case chapWaitAlg:
		return "wait-algorithm"
	case chapWaitResp:
		return "wait-response"
	case chapDone:
		return "done"
	}
	return "chapState(" + strconv.Itoa(int(s)) + ")"
}

// chapAuth runs the target side of one CHAP exchange.
type chapAuth struct {
	cred      CHAP
	state     chapState
	id        byte
	challenge []byte
}

// step consumes the security keys of one login request and returns the keys
// to answer with. An error means authentication failed.
func (a *chapAuth) step(req []kv) ([]kv, error) {
	switch a.state {
	case chapWaitAlg:
		v, ok := pdu.Lookup(req, "CHAP_A")
		if !ok {
			return nil, nil // nothing yet; wait
		}
		found := false
		for _, alg := range strings.Split(v, ",") {
			if alg == pdu.CHAPMD5 {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("CHAP_A=%.40s offers no MD5: %w", v, errAuth)
		}
		var rnd [1 + chapChallengeLen]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, fmt.Errorf("chap challenge: %w", err)
		}
		a.id = rnd[0]
		a.challenge = append([]byte(nil), rnd[1:]...)
		a.state = chapWaitResp
		return []kv{
			{Key: "CHAP_A", Value: pdu.CHAPMD5},
			{Key: "CHAP_I", Value: strconv.Itoa(int(a.id))},
			{Key: "CHAP_C", Value: pdu.EncodeHex(a.challenge)},
		}, nil
	case chapWaitResp:
		name, okN := pdu.Lookup(req, "CHAP_N")
		r, okR := pdu.Lookup(req, "CHAP_R")
		if !okN || !okR {
			return nil, fmt.Errorf("CHAP_N/CHAP_R missing: %w", errAuth)
		}
		got, err := decodeCHAPBinary(r)
		if err != nil {
			return nil, err
		}
		want := pdu.CHAPResponse(a.id, a.cred.Secret, a.challenge)
		userOK := subtle.ConstantTimeCompare([]byte(name), []byte(a.cred.User)) == 1
		if !userOK || subtle.ConstantTimeCompare(got, want[:]) != 1 {
			return nil, fmt.Errorf("CHAP_N=%.64s: wrong user or secret: %w", name, errAuth)
		}
		iID, okI := pdu.Lookup(req, "CHAP_I")
		iC, okC := pdu.Lookup(req, "CHAP_C")
		if !okI && !okC {
			a.state = chapDone
			return nil, nil
		}
		// mutual CHAP: the initiator challenges the target.
		if !okI || !okC {
			return nil, fmt.Errorf("mutual CHAP needs both CHAP_I and CHAP_C: %w", errAuth)
		}
		if a.cred.MutualUser == "" {
			return nil, fmt.Errorf("mutual CHAP requested but not configured: %w", errAuth)
		}
		id, err := strconv.ParseUint(iID, 0, 8)
		if err != nil {
			return nil, fmt.Errorf("CHAP_I=%.20q: %w", iID, errAuth)
		}
		ch, err := decodeCHAPBinary(iC)
		if err != nil {
			return nil, err
		}
		if len(ch) == 0 || len(ch) > 1024 {
			return nil, fmt.Errorf("CHAP_C of %d bytes: %w", len(ch), errAuth)
		}
		if subtle.ConstantTimeCompare(ch, a.challenge) == 1 {
			return nil, fmt.Errorf("initiator reflected the target's challenge: %w", errAuth)
		}
		resp := pdu.CHAPResponse(byte(id), a.cred.MutualSecret, ch)
		a.state = chapDone
		return []kv{{Key: "CHAP_N", Value: a.cred.MutualUser}, {Key: "CHAP_R", Value: pdu.EncodeHex(resp[:])}}, nil
	}
	return nil, nil
}
