package taskbus

import (
	"strconv"
	"unicode/utf8"
)

// MarshalJSON writes the event without reflection: one is encoded per
// notification, and encoding/json's reflection was a visible share of it.
// The output is the same JSON encoding/json produces, minus its HTML
// escaping of <, > and &, which a JSON consumer does not need.
func (e *Event) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 256+len(e.Key)+len(e.Task))
	b = append(b, `{"event":`...)
	b = appendString(b, string(e.Event))
	b = append(b, `,"task_id":`...)
	b = appendString(b, e.TaskID)
	b = append(b, `,"project":`...)
	b = strconv.AppendInt(b, e.Project, 10)
	b = append(b, `,"storage_id":`...)
	b = strconv.AppendInt(b, e.StorageID, 10)
	b = append(b, `,"bucket":`...)
	b = appendString(b, e.Bucket)
	b = append(b, `,"key":`...)
	b = appendString(b, e.Key)
	b = append(b, `,"generation":`...)
	b = appendString(b, e.Generation)
	b = append(b, `,"row_index":`...)
	if e.RowIndex == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(*e.RowIndex), 10)
	}
	b = append(b, `,"source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"event_time":`...)
	b = appendString(b, e.EventTime)
	if len(e.Task) > 0 {
		b = append(b, `,"task":`...)
		b = append(b, e.Task...)
	}
	return append(b, '}'), nil
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript; escape
		// them as encoding/json does.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
