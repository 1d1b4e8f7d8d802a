package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/lmtgt/lmtgt/target/api/wire"
)

// A config file's mistakes are told in the file's own terms: the key's
// place in the file (luns[2].block_sise) and what it wants, never the
// decoder's Go types ("Go struct field ConfigLUN.luns.size of type int64").

// unknownKey finds the first key of v (the file as generic YAML/JSON
// values) that the schema t does not have, and returns its place, the key
// and the keys allowed there ("" when every key is known).
func unknownKey(v any, t reflect.Type, at string) (place, key string, allowed []string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return "", "", nil
		}
		fields := map[string]reflect.Type{}
		var names []string
		collectFields(t, fields, &names)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				sort.Strings(names)
				return at, k, names
			}
			if p, uk, al := unknownKey(m[k], ft, joinPlace(at, k)); uk != "" {
				return p, uk, al
			}
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return "", "", nil
		}
		for i, e := range l {
			if p, uk, al := unknownKey(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); uk != "" {
				return p, uk, al
			}
		}
	}
	return "", "", nil
}

// collectFields lists the JSON keys of struct t, embedded structs included.
func collectFields(t reflect.Type, fields map[string]reflect.Type, names *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			collectFields(f.Type, fields, names)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
		*names = append(*names, name)
	}
}

func joinPlace(at, k string) string {
	if at == "" {
		return k
	}
	return at + "." + k
}

// kindWant says what a value of kind k looks like in the file.
func kindWant(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "text"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "a mapping of keys"
	}
	return t.Kind().String()
}

// valueFound names the kind of value the decoder found (its Value field).
func valueFound(v string) string {
	switch {
	case v == "string":
		return "text"
	case v == "number", strings.HasPrefix(v, "number "):
		return "a number (" + strings.TrimPrefix(v, "number ") + ")"
	case v == "bool":
		return "true or false"
	case v == "array":
		return "a list"
	case v == "object":
		return "a mapping of keys"
	}
	return v
}

// configDecodeError turns the JSON decoder's error on a config file into
// one in the file's terms; generic is the file as generic values, to
// place an unknown key.
func configDecodeError(err error, generic any) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		place := te.Field
		if place == "" {
			place = "the file"
		}
		what := ""
		if te.Type.Kind() == reflect.Int64 && strings.HasSuffix(te.Field, "size") {
			what = " of bytes (like 1073741824)"
		}
		return fmt.Errorf("%s: want %s%s, found %s", place, kindWant(te.Type), what, valueFound(te.Value))
	}
	if strings.HasPrefix(err.Error(), "json: unknown field ") {
		if place, key, allowed := unknownKey(generic, reflect.TypeOf(wire.Config{}), ""); key != "" {
			if place == "" {
				place = "top level"
			}
			return fmt.Errorf("%s: unknown key %q%s; keys there: %s", place, key, didYouMean(key, allowed, "%s"), strings.Join(allowed, ", "))
		}
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not valid JSON at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: "))
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// noFloats refuses a YAML number written as a float (1e6, 1.5, .inf):
// every number of the file is a whole one (sizes in bytes, LUN numbers,
// rates), and YAML would otherwise hand 1e9 over as 1000000000 where a
// JSON file, like the CLI's --size, refuses it. key is the mapping key
// n is the value of.
func noFloats(n *yaml.Node, key string) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!float" {
		where := fmt.Sprintf("line %d", n.Line)
		if key != "" {
			where += ": " + key
		}
		return fmt.Errorf("%s: want a whole number, found %s", where, n.Value)
	}
	for i, c := range n.Content {
		k := key
		if n.Kind == yaml.MappingNode {
			if i%2 == 0 {
				continue // a key
			}
			k = n.Content[i-1].Value
		}
		if err := noFloats(c, k); err != nil {
			return err
		}
	}
	return nil
}
