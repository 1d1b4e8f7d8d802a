package lm

import "testing"

func TestSizeText(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{100, "100 B"},
		{1536, "1.5 KiB"},
		{1 << 20, "1 MiB"},
		{524288, "512 KiB"},
		{3 << 29, "1.5 GiB"},
		{1000000, "976.56 KiB (1000000 bytes)"},
		{1<<30 + 512, "1 GiB (1073742336 bytes)"},
		{1 << 40, "1 TiB"},
	} {
		if got := sizeText(c.n); got != c.want {
			t.Errorf("sizeText(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
