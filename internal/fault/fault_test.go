package fault

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestOf(t *testing.T) {
	t.Parallel()
	base := errors.New("bad input")
	tests := []struct {
		name      string
		err       error
		wantCode  Code
		wantClass Class
	}{
		{"nil", nil, Unclassified, ClassUnknown},
		{"plain", base, Unclassified, ClassUnknown},
		{"permanent", Permanent(TooLarge, base), TooLarge, ClassPermanent},
		{"wrapped after classifying", fmt.Errorf("ingest: %w", Permanent(BadRecord, base)), BadRecord, ClassPermanent},
		{"transient", Transient(Unavailable, base), Unavailable, ClassTransient},
		{"the outermost decision wins", Transient(Unavailable, fmt.Errorf("x: %w", Permanent(NotFound, base))), Unavailable, ClassTransient},
		{"a cancelled context is transient", fmt.Errorf("x: %w", context.Canceled), Canceled, ClassTransient},
		{"a deadline is transient", context.DeadlineExceeded, Canceled, ClassTransient},
		{"joined: the first classified one", errors.Join(base, Permanent(Panic, base)), Panic, ClassPermanent},
	}
	for _, tt := range tests {
		code, class := Of(tt.err)
		if code != tt.wantCode || class != tt.wantClass {
			t.Errorf("%s: Of = %q, %v; want %q, %v", tt.name, code, class, tt.wantCode, tt.wantClass)
		}
		if got, want := IsPermanent(tt.err), tt.wantClass == ClassPermanent; got != want {
			t.Errorf("%s: IsPermanent = %v, want %v", tt.name, got, want)
		}
	}
}

func TestWrapping(t *testing.T) {
	t.Parallel()
	base := errors.New("bad input")
	if !errors.Is(Permanent(BadInput, base), base) || !errors.Is(Transient(Unavailable, base), base) {
		t.Error("classifying hides the wrapped error from errors.Is")
	}
	if Permanent(BadInput, nil) != nil || Transient(Unavailable, nil) != nil {
		t.Error("classifying nil is not nil")
	}
	if got := Permanent(BadInput, base).Error(); got != "bad input" {
		t.Errorf("message = %q, want the wrapped one", got)
	}
}

func TestExhausted(t *testing.T) {
	t.Parallel()
	base := errors.New("what is this")
	tests := []struct {
		name      string
		err       error
		wantCode  Code
		wantClass Class
	}{
		{"unclassified becomes permanent", base, Unclassified, ClassPermanent},
		{"transient stays transient", Transient(Unavailable, base), Unavailable, ClassTransient},
		{"permanent stays as it is", Permanent(TooLarge, base), TooLarge, ClassPermanent},
		{"a shutdown stays transient", context.Canceled, Canceled, ClassTransient},
	}
	for _, tt := range tests {
		code, class := Of(Exhausted(tt.err))
		if code != tt.wantCode || class != tt.wantClass {
			t.Errorf("%s: Of(Exhausted) = %q, %v; want %q, %v", tt.name, code, class, tt.wantCode, tt.wantClass)
		}
	}
}
