package events

import "encoding/binary"

// validObject reports whether b is one JSON object, optionally surrounded by
// whitespace, accepting exactly what encoding/json.Valid accepts for such
// input (FuzzValidObject checks this against json.Valid itself): the
// RFC 8259 grammar, bytes of any value inside strings (json.Valid does not
// check UTF-8), and at most maxDepth nested arrays and objects.
//
// It exists because json.Valid's byte-at-a-time state machine costs about
// 3 µs for a 1 KB storage#object payload, a measurable share of a
// notification's whole path; this scanner skips string bodies, which are
// most of a payload, in a tight loop. It is iterative, so that deep input
// costs no goroutine stack.
func validObject(b []byte) bool {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	i, ok := scanValue(b, i)
	return ok && skipSpace(b, i) == len(b)
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// scanValue scans the value starting at b[i] and returns the index after it.
func scanValue(b []byte, i int) (int, bool) {
	// open[d] is true when the container at depth d is an object.
	var open []bool
	var stack [64]bool
	open = stack[:0]
	for {
		// Here a value must start at b[i].
		i = skipSpace(b, i)
		if i == len(b) {
			return i, false
		}
		switch c := b[i]; {
		case c == '{' || c == '[':
			if len(open) == maxDepth {
				return i, false
			}
			open = append(open, c == '{')
			i = skipSpace(b, i+1)
			if i == len(b) {
				return i, false
			}
			if (c == '{' && b[i] == '}') || (c == '[' && b[i] == ']') {
				open = open[:len(open)-1]
				i++
				break
			}
			if c == '{' {
				var ok bool
				if i, ok = scanKey(b, i); !ok {
					return i, false
				}
			}
			continue
		case c == '"':
			var ok bool
			if i, ok = scanString(b, i); !ok {
				return i, false
			}
		case c == '-' || (c >= '0' && c <= '9'):
			var ok bool
			if i, ok = scanNumber(b, i); !ok {
				return i, false
			}
		case c == 't':
			if !hasLiteral(b, i, "true") {
				return i, false
			}
			i += 4
		case c == 'f':
			if !hasLiteral(b, i, "false") {
				return i, false
			}
			i += 5
		case c == 'n':
			if !hasLiteral(b, i, "null") {
				return i, false
			}
			i += 4
		default:
			return i, false
		}
		// A value ended: close containers, or go on to the next element.
		for {
			if len(open) == 0 {
				return i, true
			}
			i = skipSpace(b, i)
			if i == len(b) {
				return i, false
			}
			obj := open[len(open)-1]
			if b[i] == ',' {
				i = skipSpace(b, i+1)
				if obj {
					var ok bool
					if i, ok = scanKey(b, i); !ok {
						return i, false
					}
				}
				break
			}
			if (obj && b[i] == '}') || (!obj && b[i] == ']') {
				open = open[:len(open)-1]
				i++
				continue
			}
			return i, false
		}
	}
}

// scanKey scans `"key" :` and returns the index after the colon.
func scanKey(b []byte, i int) (int, bool) {
	if i == len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := scanString(b, i)
	if !ok {
		return i, false
	}
	i = skipSpace(b, i)
	if i == len(b) || b[i] != ':' {
		return i, false
	}
	return i + 1, true
}

// plain marks the bytes a string may hold unescaped: not '"', not '\\',
// not control characters.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString scans the string starting at b[i] == '"'.
func scanString(b []byte, i int) (int, bool) {
	i++
	for {
		// Eight bytes at a time while none is special, then byte by byte.
		for len(b)-i >= 8 && !special(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i == len(b) {
			return i, false
		}
		switch b[i] {
		case '"':
			return i + 1, true
		case '\\':
			i++
			if i == len(b) {
				return i, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if len(b)-i < 5 {
					return i, false
				}
				for _, h := range b[i+1 : i+5] {
					if !isHex(h) {
						return i, false
					}
				}
				i += 5
			default:
				return i, false
			}
		default: // a control character
			return i, false
		}
	}
}

// special reports whether any byte of w is '"', '\\' or below 0x20, with
// the bit tricks of "Bit Twiddling Hacks" (determine if a word has a zero
// byte, or a byte less than n); both are exact, not estimates.
func special(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) & ^v & highs }
	return hasZero(w^(ones*'"'))|hasZero(w^(ones*'\\'))|((w-ones*0x20) & ^w & highs) != 0
}

// scanNumber scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func scanNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i+1)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func hasLiteral(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}
