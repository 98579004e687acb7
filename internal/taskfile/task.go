package taskfile

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

const dataPrefix = `{"data":`

// taskBuilder turns one JSON item into a task. It is reused across items so
// that the only allocation per item is the Task handed to the caller.
type taskBuilder struct {
	buf bytes.Buffer
}

// build returns the task for item, or a bad-record error.
func (b *taskBuilder) build(item []byte) (json.RawMessage, error) {
	item = trimSpace(item)
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD, so two
	// different inputs could hash alike downstream; refuse them instead.
	if !utf8.Valid(item) {
		return nil, badRecord(nil, "not valid UTF-8")
	}
	b.buf.Reset()
	// Compact straight after the prefix: if the item turns out not to be a
	// task, wrapping it costs one more byte instead of a second copy.
	b.buf.WriteString(dataPrefix)
	if err := json.Compact(&b.buf, item); err != nil {
		return nil, badRecord(err, "%v", err)
	}
	obj := b.buf.Bytes()[len(dataPrefix):]
	if obj[0] != '{' {
		return nil, badRecord(nil, "item is a JSON %s, not an object", jsonKind(obj[0]))
	}
	if first, ok := dataMember(obj); ok {
		if first != '{' {
			return nil, badRecord(nil, `"data" is a JSON %s, not an object`, jsonKind(first))
		}
		return bytes.Clone(obj), nil
	}
	b.buf.WriteByte('}')
	return bytes.Clone(b.buf.Bytes()), nil
}

// dataMember reports whether the compact JSON object obj has a top-level
// "data" member and, if so, the first byte of its value. With duplicate keys
// the last one wins, as in encoding/json and Python's json, so that the
// decision matches what a consumer decoding the task will see.
//
// Walking the bytes avoids building a map or even a token per key: this runs
// for every record of million-line files.
func dataMember(obj []byte) (first byte, ok bool) {
	i := 1
	for i < len(obj) && obj[i] == '"' {
		end := stringEnd(obj, i)
		key := obj[i+1 : end-1]
		i = end + 1 // skip ':'
		if isDataKey(key) {
			first, ok = obj[i], true
		}
		i = skipValue(obj, i)
		if i < len(obj) && obj[i] == ',' {
			i++
		}
	}
	return first, ok
}

func isDataKey(key []byte) bool {
	if string(key) == "data" {
		return true
	}
	// An escaped spelling such as "d\u0061ta" is still the key "data" to
	// any decoder.
	if bytes.IndexByte(key, '\\') < 0 || len(key) > len(`\u0064\u0061\u0074\u0061`) {
		return false
	}
	var s string
	quoted := make([]byte, 0, len(key)+2)
	quoted = append(append(append(quoted, '"'), key...), '"')
	return json.Unmarshal(quoted, &s) == nil && s == "data"
}

// stringEnd returns the index just past the string starting at b[i] == '"'.
// b must be valid JSON.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index just past the value starting at b[i] in
// compact, valid JSON.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
		i++
	}
	return i
}

func jsonKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

func hasNonSpace(b []byte) bool { return len(trimSpace(b)) > 0 }
