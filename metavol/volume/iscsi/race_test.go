//go:build race

package iscsi

// raceBuild: the tests run under the race detector (sync.Pool drops part
// of what is put back, so allocation counts are not exact).
const raceBuild = true
