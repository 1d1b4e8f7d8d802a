//go:build !rbd

package rbd

import (
	"errors"
	"strings"
	"testing"
)

// Without the rbd build tag every entry point says so, with how to build
// it.
func TestNotBuilt(t *testing.T) {
	if Built {
		t.Fatal("Built is true without the rbd tag")
	}
	_, err := Connect(Config{})
	if !errors.Is(err, ErrNotBuilt) || !strings.Contains(err.Error(), "-tags rbd") {
		t.Fatalf("Connect: %v, want ErrNotBuilt naming the build tag", err)
	}
}
