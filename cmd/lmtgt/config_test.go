package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// TestConfigYAMLRoundTrip: YAML is written from the JSON schema; strings
// that would read back as numbers or booleans are quoted, so decoding the
// YAML gives the same config, and encoding it again the same bytes.
func TestConfigYAMLRoundTrip(t *testing.T) {
	cfg := wire.Config{
		Version:       1,
		DiscoveryCHAP: &wire.ConfigCHAP{User: "true", Secret: "0123"},
		LUNs: []wire.ConfigLUN{{Name: "1e5", ID: "1234567890123456", NAA: "60000000000000000000000000000001", Serial: "0123456789012345",
			Size: 1 << 20, BlockSize: 512, Volume: wire.ConfigVolume{Kind: "file", Path: "/srv/a b:c.img"},
			ALUA: []wire.ConfigALUA{{Group: 2, State: "standby"}}}},
		Targets: []wire.ConfigTarget{{IQN: "iqn.2026-12.org.x:t", Group: 1, Port: 1, Initiators: []string{},
			LUNs:    []wire.ConfigMapping{{LUN: 0, Name: "1e5", ReadOnly: true, Initiators: []string{"iqn.2026-12.org.x:h"}}},
			Portals: []string{"127.0.0.1:3260", "[::1]:3260"}}},
		Migrations: []wire.ConfigMigration{{Source: "1e5", Target: "b", Vehicle: "generic", ConfigPairOptions: wire.ConfigPairOptions{
			Speed: "low", MaxMBps: 3, AutoSplit: true, Verify: true, Priority: 8, StartAt: "2026-12-24T21:00:00Z",
			Windows: []string{"22:00-06:00=highest", "12:00-13:00=low,max-mbps=4"}, MaxElapsed: "6h0m0s"}}},
		Sessions: []wire.ConfigSession{{Name: "w", MaxActive: 2, ConfigPairOptions: wire.ConfigPairOptions{Speed: "high", Priority: 2},
			Pairs: []wire.ConfigSessionPair{{Source: "c", Target: "d", Vehicle: "auto", Options: &wire.ConfigPairOptions{Speed: "high", Priority: 7}}}}},
	}
	y, err := encodeConfig(cfg, "yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version: 1\n", `serial: "0123456789012345"`, `id: "1234567890123456"`, `name: "1e5"`, `user: "true"`, "initiators: []",
		"read_only: true\n", "portals:\n", "priority: 8\n", "start_at: \"2026-12-24T21:00:00Z\"", "- 22:00-06:00=highest\n", "max_elapsed: 6h0m0s\n", "max_active: 2\n"} {
		if !strings.Contains(string(y), want) {
			t.Fatalf("yaml lacks %q:\n%s", want, y)
		}
	}
	got, err := decodeConfig(y)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Fatalf("yaml round trip:\n got %+v\nwant %+v", got, cfg)
	}
	if y2, _ := encodeConfig(got, "yaml"); string(y2) != string(y) {
		t.Fatalf("second encoding differs:\n%s\n---\n%s", y2, y)
	}
	j, err := encodeConfig(cfg, "json")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeConfig(j); err != nil || !reflect.DeepEqual(got, cfg) {
		t.Fatalf("json round trip: %+v %v", got, err)
	}
	if _, err := decodeConfig([]byte("version: 1\nlunz: []\n")); err == nil || !strings.Contains(err.Error(), `unknown key "lunz"`) {
		t.Fatalf("unknown key: %v", err)
	}
}

// TestConfigFileMistakes: a hand-edited file's mistakes are told in the
// file's terms (where, which key, what is wanted), never with the
// decoder's Go types or a library prefix ("json:", "yaml:").
func TestConfigFileMistakes(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"version: 1\nluns:\n  - name: a\n    size: 1M\n", `luns.size: want a whole number of bytes (like 1073741824), found text`},
		{"version: 1\nluns:\n  - name: a\n    size: 1048576\n    block_sise: 512\n", `luns[0]: unknown key "block_sise" (did you mean block_size?)`},
		{`{"version": 1, "targets": [{"iqn": "iqn.2026-12.org.x:t", "luns": [{"lun": 0, "name": "a", "readonly": true}]}]}`,
			`targets[0].luns[0]: unknown key "readonly" (did you mean read_only?)`},
		{"version: 1\nlunz: []\n", `top level: unknown key "lunz" (did you mean luns?)`},
		{"version: 1\nluns:\n\t- name: x\n", "not valid YAML: line 3: found character that cannot start any token"},
		{`{"version": "1"}`, "version: want a whole number, found text"},
		{`{"version": 1,}`, "not valid JSON at byte"},
		{"version: 1\nluns:\n  - name: a\n    size: 1e6\n", "line 4: size: want a whole number, found 1e6"},
		{"version: 1\nluns:\n  - name: a\n    size: 1048576.0\n", "line 4: size: want a whole number, found 1048576.0"},
	} {
		_, err := decodeConfig([]byte(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("file %q:\n got %v\nwant %q", c.file, err, c.want)
			continue
		}
		for _, bad := range []string{"json:", "yaml:", "Go struct", "int64", "wire."} {
			if strings.Contains(err.Error(), bad) {
				t.Errorf("file %q: error %q shows %q", c.file, err, bad)
			}
		}
	}
}
