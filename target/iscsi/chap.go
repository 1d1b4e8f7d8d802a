package iscsi

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// chapMD5 is CHAP_A=5 (RFC 1994 MD5), the only algorithm offered.
const chapMD5 = "5"

// chapChallengeLen is the length of the challenges this target sends.
const chapChallengeLen = 16

// errAuth is any CHAP failure; the login answers 0x0201.
var errAuth = errors.New("authentication failed")

// chapResponse computes MD5(id || secret || challenge) (RFC 1994 §4.1).
func chapResponse(id byte, secret string, challenge []byte) [md5.Size]byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	var out [md5.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

// decodeCHAPBinary decodes a CHAP binary value: 0x/0X hex or 0b/0B base64
// (RFC 7143 §6.1 binary-value).
func decodeCHAPBinary(v string) ([]byte, error) {
	if len(v) < 3 {
		return nil, fmt.Errorf("chap value %q too short: %w", v, errAuth)
	}
	switch v[:2] {
	case "0x", "0X":
		s := v[2:]
		if len(s)%2 == 1 {
			s = "0" + s
		}
		b, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("chap hex value: %w", errAuth)
		}
		return b, nil
	case "0b", "0B":
		b, err := base64.StdEncoding.DecodeString(v[2:])
		if err != nil {
			return nil, fmt.Errorf("chap base64 value: %w", errAuth)
		}
		return b, nil
	}
	return nil, fmt.Errorf("chap value %.20q is neither hex nor base64: %w", v, errAuth)
}

func encodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }

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
		v, ok := lookup(req, "CHAP_A")
		if !ok {
			return nil, nil // nothing yet; wait
		}
		found := false
		for _, alg := range strings.Split(v, ",") {
			if alg == chapMD5 {
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
			{"CHAP_A", chapMD5},
			{"CHAP_I", strconv.Itoa(int(a.id))},
			{"CHAP_C", encodeHex(a.challenge)},
		}, nil
	case chapWaitResp:
		name, okN := lookup(req, "CHAP_N")
		r, okR := lookup(req, "CHAP_R")
		if !okN || !okR {
			return nil, fmt.Errorf("CHAP_N/CHAP_R missing: %w", errAuth)
		}
		got, err := decodeCHAPBinary(r)
		if err != nil {
			return nil, err
		}
		want := chapResponse(a.id, a.cred.Secret, a.challenge)
		userOK := subtle.ConstantTimeCompare([]byte(name), []byte(a.cred.User)) == 1
		if !userOK || subtle.ConstantTimeCompare(got, want[:]) != 1 {
			return nil, fmt.Errorf("CHAP_N=%.64s: wrong user or secret: %w", name, errAuth)
		}
		iID, okI := lookup(req, "CHAP_I")
		iC, okC := lookup(req, "CHAP_C")
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
		resp := chapResponse(byte(id), a.cred.MutualSecret, ch)
		a.state = chapDone
		return []kv{{"CHAP_N", a.cred.MutualUser}, {"CHAP_R", encodeHex(resp[:])}}, nil
	}
	return nil, nil
}
