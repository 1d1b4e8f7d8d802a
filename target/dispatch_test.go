package target

import "testing"

// TestDispatchMatchesSupportedOps checks that REPORT SUPPORTED OPERATION
// CODES (supportedOps) and the dispatch table (serve) list the same
// opcodes: every listed opcode reaches a handler, every other opcode is
// INVALID COMMAND OPERATION CODE.
func TestDispatchMatchesSupportedOps(t *testing.T) {
	s, _ := oneLUN(t, 4<<20, 512)
	n := openNexus(t, s, "iqn.test:dispatch", 1)
	listed := map[byte]bool{}
	for _, o := range supportedOps {
		listed[o.op] = true
	}
	for op := 0; op < 256; op++ {
		cdb := make([]byte, 16)
		cdb[0] = byte(op)
		c := exec(n, 0, cdb, nil, 512)
		k, code, _ := senseKeyASC(c.Sense)
		invalid := c.Status == statusCheckCondition && k == keyIllegalRequest && code == ascInvalidOpcode
		switch {
		case listed[byte(op)] && invalid:
			t.Errorf("opcode 0x%02x is reported as supported but has no handler", op)
		case !listed[byte(op)] && !invalid:
			t.Errorf("opcode 0x%02x has a handler (status %v) but is not in supportedOps", op, samStatus(c.Status))
		}
	}
}
