//go:build !rbd

package integration

// rbdBuildTags: this test binary has no RBD support; neither has the lmtgt
// it builds.
func rbdBuildTags() ([]string, error) { return nil, nil }
